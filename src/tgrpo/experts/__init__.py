"""Scripted experts that solve LIBERO tasks from privileged simulator state (demonstrations, checks)."""

from tgrpo.experts.scripted import ScriptedExpert, supports

__all__ = ["ScriptedExpert", "supports"]
