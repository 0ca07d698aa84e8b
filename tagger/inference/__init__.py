"""Models and what runs them: specs, the classifier protocol (base.py), the runtimes, export."""
