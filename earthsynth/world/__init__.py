"""The synthetic satellite world: procedural, deterministic from a seed, the ground truth for everything.

`build_world(WorldConfig(seed=...))` makes a textured, watertight city (terrain, streets, buildings with
windows, trees) and the same city at a reduced level of detail; `sample_cars` adds per-date traffic;
`landscape_tile` renders orthoimagery + DSM of an unbounded procedural landscape at any ground sampling distance.
"""

from earthsynth.world.build import World, WorldConfig, build_world
from earthsynth.world.cars import sample_cars
from earthsynth.world.city import BuildingRecord
from earthsynth.world.landcover import LANDCOVER_NAMES
from earthsynth.world.landscape import BIOMES, landscape_biomes, landscape_tile
from earthsynth.world.primitives import PART_NAMES

__all__ = ["World", "WorldConfig", "build_world", "sample_cars", "BuildingRecord", "LANDCOVER_NAMES",
           "PART_NAMES", "BIOMES", "landscape_tile", "landscape_biomes"]
