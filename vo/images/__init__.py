"""The image pipeline: cameras, calibration, preprocessing, extraction, astrometry, zero points."""
