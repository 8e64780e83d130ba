"""The embedded synthetic world: a captioned corpus, an in-the-wild pool and three zero-shot
benchmarks written in the real datasets' layouts (see ``docs/synthetic-world.md``)."""

from .world import WorldPaths, generate_world

__all__ = ["WorldPaths", "generate_world"]
