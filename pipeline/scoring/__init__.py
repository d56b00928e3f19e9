"""Scoring samples with a model's loss (GenCode, Superfiltering/Cherry IFD) and selecting by it."""
