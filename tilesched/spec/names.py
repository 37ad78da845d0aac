"""Which names a spec may give to things.

Every name in a spec (the spec itself, axes, tensors, stages, parameters, options) becomes
an identifier in generated Python and C, so a name either language reserves is refused
when the spec is read rather than when the generated code fails to import or compile.
"""

from __future__ import annotations

import keyword

# hard keywords only: soft keywords (match, case, type, _) are ordinary names outside their statements
PYTHON_KEYWORDS = frozenset(keyword.kwlist)

C_KEYWORDS = frozenset((
    # C11
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local "
    # C23
    "alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual "
    "_BitInt _Decimal32 _Decimal64 _Decimal128"
).split())


def reserved_in_c(name: str) -> bool:
    """C reserves every name that starts with `_` and an uppercase letter or a second `_`."""
    return len(name) >= 2 and name[0] == "_" and (name[1] == "_" or name[1].isupper())


def name_problem(name: str) -> str | None:
    """Why generated code could not use `name`, or None when it can."""
    in_python, in_c = name in PYTHON_KEYWORDS, name in C_KEYWORDS
    if in_python or in_c:
        language = "Python and C" if in_python and in_c else "Python" if in_python else "C"
        return f"{name!r} is a {language} keyword; generated code could not use it as a name"
    if reserved_in_c(name):
        start = "__" if name[1] == "_" else "_ and an uppercase letter"
        return f"{name!r} is reserved in C (it starts with {start}); generated code could not use it as a name"
    return None


def check_name(name: str) -> str:
    """Pydantic validator: `name` unchanged, or ValueError saying why it is refused."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return name
