"""Trainers run on training workers only: importing one imports torch and transformers."""
