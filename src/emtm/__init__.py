"""emtm: fast temporal sentence grounding in videos with multi-teacher knowledge distillation."""

__version__ = "0.1.0"
