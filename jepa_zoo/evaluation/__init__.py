"""Evaluation protocols on frozen encoders."""
