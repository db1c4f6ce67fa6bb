"""References: resampling of images and PSFs onto another grid with their noise correlation
(:mod:`.align`) and deep coadds of the reference images (:mod:`.coadd`)."""
