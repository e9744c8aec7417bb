"""Images and arrays in (preprocessing, the demo data), pictures out (overlays, grids, plots)."""
