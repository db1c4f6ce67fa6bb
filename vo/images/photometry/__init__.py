"""Photometric calibration: Gaia magnitudes converted to a camera's filters (:mod:`.photometric`)
and the zero point of an image (:mod:`.zeropoint`)."""
