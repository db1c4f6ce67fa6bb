"""Real/bogus classification: features and scores (:mod:`.score`), ZTF's braai network in numpy
(:mod:`.braai`) and the DemoCam model trained on injections (:mod:`.training`)."""
