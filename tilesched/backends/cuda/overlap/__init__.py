"""Compute-communication overlap kernels for CUDA: rendered from the overlap plans of
`tilesched.schedules.overlap`, launched by `ops` over `tilesched.runtime` buffers."""
