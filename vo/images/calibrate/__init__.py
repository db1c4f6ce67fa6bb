"""Calibration: master bias and flats (:mod:`.calibration`) and preprocessing of raw CCD sections
into images in electrons with weights and flags (:mod:`.preprocess`)."""
