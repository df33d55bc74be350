"""Activation Steering Lab: learn activation steering by doing it, locally."""

__version__ = "0.1.0"
