"""File helpers: atomic writes, HDF5 tables, netCDF."""
