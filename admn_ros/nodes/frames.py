"""REP 103 frames, without ROS (docs/FRAMES.md).

The OptiTrack `world` frame of GDTM is y-up: the floor is its (x, z) plane, where the model
localises. Outputs are published in the z-up `map` frame with the same origin and the axes
turned: map (x, y, z) = world (x, -z, y), a rotation of +90 degrees about x. `/tf_static`
carries world -> map, i.e. the map's axes seen from world (-90 degrees about x).
"""

from __future__ import annotations

import math

import numpy as np

WORLD_TO_MAP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # p_map = R p_world
GROUND_TO_MAP = WORLD_TO_MAP[:2, [0, 2]]  # world ground plane (x, z) -> map (x, y)
# tf world -> map: rotation of the map's axes in world (x, y, z, w) = -90 degrees about x
MAP_IN_WORLD_QUAT = (-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))


def world_to_map(xyz) -> np.ndarray:
    """Points [..., 3] in the y-up OptiTrack world -> the z-up map frame."""
    return np.asarray(xyz, float) @ WORLD_TO_MAP.T


def ground_to_map(xz) -> np.ndarray:
    """World ground-plane points [..., 2] (x, z) -> map (x, y)."""
    return np.asarray(xz, float) @ GROUND_TO_MAP.T


def map_to_ground(xy) -> np.ndarray:
    """Map points [..., 2] (x, y) -> world ground plane (x, z) (the inverse rotation)."""
    return np.asarray(xy, float) @ GROUND_TO_MAP
