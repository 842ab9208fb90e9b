"""Media in and out: image files (:mod:`.image`: every mode to RGB, EXIF orientation, tensors)."""
