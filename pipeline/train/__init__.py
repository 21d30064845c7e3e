"""Training engine: run files, checkpoint/resume, timing, the language-model and image-classifier loops."""
