"""Training and evaluation of sr3infer models; imports sr3infer, never imported by it."""
