"""Camera geometry shared by the generator, the reader and the tests.

Node frames follow the optical convention (x right, y down, z forward). A node pose is the
rotation ``R`` whose columns are the node axes in world coordinates (node -> world) and the
node position ``t`` (world, metres, y up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_at_rotation(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (node -> world) of an optical frame at `position` looking at `target`."""
    forward = np.asarray(target, float) - np.asarray(position, float)
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        raise ValueError(f"look_at target {target} coincides with position {position}")
    forward /= norm
    right = np.cross(forward, WORLD_UP)
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("camera looks straight up or down; choose another look_at")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole camera at a node pose; pixel (row i, col j) has its centre at u=j, v=i."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray  # [3, 3] node -> world
    position: np.ndarray  # [3] world

    @classmethod
    def from_fov(
        cls, width: int, height: int, hfov_deg: float, rotation: np.ndarray, position: np.ndarray
    ) -> PinholeCamera:
        """Square pixels, principal point at the image centre."""
        fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0,
                   np.asarray(rotation, float), np.asarray(position, float))

    def to_node(self, points: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> node-frame points [..., 3]."""
        return (np.asarray(points, float) - self.position) @ self.rotation

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> pixel coordinates [..., 2] (u, v) and z-depth [...] (m)."""
        pc = self.to_node(points)
        z = pc[..., 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        uv = np.stack([self.fx * pc[..., 0] / safe + self.cx,
                       self.fy * pc[..., 1] / safe + self.cy], axis=-1)
        return uv, z

    def in_view(self, points: np.ndarray) -> np.ndarray:
        """True where a world point projects inside the image in front of the camera."""
        uv, z = self.project(points)
        return ((z > 0) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= self.width - 0.5)
                & (uv[..., 1] >= -0.5) & (uv[..., 1] <= self.height - 0.5))

    def rays(self) -> np.ndarray:
        """World ray directions [H, W, 3] scaled so that a hit at parameter t has z-depth t."""
        v, u = np.mgrid[0:self.height, 0:self.width].astype(float)
        dc = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], -1)
        return dc @ self.rotation.T

    def intrinsics(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
                "cx": self.cx, "cy": self.cy}


def yaw_rotation(yaw: float) -> np.ndarray:
    """Rotation about world y (up) whose x axis points along heading (cos yaw, 0, sin yaw)."""
    c, s = np.cos(yaw), np.sin(yaw)
    # columns: forward, up, forward x up (right-handed)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """3x3 rotation -> quaternion (x, y, z, w), w >= 0."""
    r = np.asarray(r, float)
    m = np.array([
        [1 + r[0, 0] - r[1, 1] - r[2, 2], 0, 0, 0],
        [r[0, 1] + r[1, 0], 1 - r[0, 0] + r[1, 1] - r[2, 2], 0, 0],
        [r[0, 2] + r[2, 0], r[1, 2] + r[2, 1], 1 - r[0, 0] - r[1, 1] + r[2, 2], 0],
        [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], 1 + r[0, 0] + r[1, 1] + r[2, 2]],
    ])
    m = (m + np.tril(m, -1).T) / 4.0  # symmetric K matrix (Bar-Itzhack)
    w, vec = np.linalg.eigh(m)
    q = vec[:, np.argmax(w)]
    return q if q[3] >= 0 else -q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> 3x3 rotation."""
    x, y, z, w = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_to_rotvec(r: np.ndarray) -> np.ndarray:
    """3x3 rotation -> rotation vector (axis * angle)."""
    q = rotation_to_quaternion(r)
    s = np.linalg.norm(q[:3])
    if s < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(s, q[3])
    return q[:3] / s * angle
