"""Synthetic GDTM-like recordings: a toy car in a room watched by RGB, depth and radar nodes.

The scene (config/scenes/*.yaml) fixes the room, the node poses and the sensor models; the seed
fixes the trajectory, the lighting and every noise draw, so one (scene, seed, frames) always
gives the same recording. Per node, the static room is ray-cast once (rays, floor texture,
walls, distractor box, radar clutter); each frame only casts the oriented boxes of the car and
of any movers (look-alike vehicles, `movers` in the scene) inside their projected bounding
boxes, so 1,000 frames take seconds.

World frame = OptiTrack frame: metres, y up; the car drives on y = 0. The written layout is
the one GDTM's preprocessing writes (`mocap.hdf5` + `node_<k>/{zed,realsense,mmwave}.hdf5`,
see `admn_ros.data.gdtm`), with node rotations global -> local as GDTM stores them, plus a
`metadata.json` beside it (GDTM-style node entries and the generator's own `admn` block).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from admn_ros.data.config import (
    CarConfig,
    LayoutConfig,
    MoversConfig,
    SceneConfig,
    load_data_config,
    load_scene,
)
from admn_ros.data.gdtm import group_name, node_group, open_upstream_files
from admn_ros.data.geometry import PinholeCamera, look_at_rotation, rotation_to_rotvec, yaw_rotation

FORMAT = "admn_ros/gdtm-like/2"
CEILING_RGB = np.array([55.0, 58.0, 66.0])  # what cameras see above the walls (no depth return)
SHADOW_SIGMA_M = 0.16  # soft contact shadow under the car
SHADOW_STRENGTH = 0.45


# --------------------------------------------------------------------------- trajectory
@dataclass
class Trajectory:
    """Car ground truth at the mocap rate: times (s), positions (x, z) m, yaw (rad, unwrapped)."""

    t: np.ndarray  # [T]
    xz: np.ndarray  # [T, 2]
    yaw: np.ndarray  # [T]

    def __post_init__(self) -> None:
        self.vel = np.gradient(self.xz, self.t[1] - self.t[0], axis=0)

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolate to `times` (s): positions [N, 2], yaw [N], velocity [N, 2] (m/s)."""
        times = np.asarray(times, float)
        xz = np.stack([np.interp(times, self.t, self.xz[:, k]) for k in range(2)], -1)
        yaw = np.interp(times, self.t, self.yaw)
        vel = np.stack([np.interp(times, self.t, self.vel[:, k]) for k in range(2)], -1)
        return xz, yaw, vel


def simulate_trajectory(scene: SceneConfig, duration_s: float, rng: np.random.Generator
                        ) -> Trajectory:
    """Unicycle car with piecewise target speeds (stops included), smooth turns, wall avoidance."""
    car, arena = scene.car, scene.arena
    dt = 1.0 / scene.timing.mocap_hz
    steps = int(np.ceil(duration_s / dt)) + 2
    lo = np.array([arena.x[0], arena.z[0]]) + car.wall_margin_m
    hi = np.array([arena.x[1], arena.z[1]]) - car.wall_margin_m
    centre = (lo + hi) / 2.0

    pos = lo + rng.random(2) * (hi - lo)
    yaw = rng.uniform(-np.pi, np.pi)
    speed, target_speed, speed_left = 0.0, rng.uniform(*car.speed_mps), 0.0
    turn, target_turn, turn_left = 0.0, 0.0, 0.0
    out_xz = np.empty((steps, 2))
    out_yaw = np.empty(steps)
    for k in range(steps):
        if speed_left <= 0.0:
            stop = rng.random() < car.stop_probability
            target_speed = 0.0 if stop else rng.uniform(*car.speed_mps)
            speed_left = rng.uniform(*car.speed_change_s)
        if turn_left <= 0.0:
            target_turn = rng.uniform(-1.0, 1.0) * car.turn_rate_max
            turn_left = rng.uniform(*car.turn_change_s)
        speed_left -= dt
        turn_left -= dt
        speed += (target_speed - speed) * min(1.0, 1.5 * dt)
        turn += (target_turn - turn) * min(1.0, 3.0 * dt)
        # near a wall: steer towards the centre, overriding the random turn
        slack = np.minimum(pos - lo, hi - pos).min()
        if slack < 0.35:
            to_centre = np.arctan2(centre[1] - pos[1], centre[0] - pos[0])
            diff = (to_centre - yaw + np.pi) % (2 * np.pi) - np.pi
            turn = np.clip(4.0 * diff, -car.turn_rate_max * 1.5, car.turn_rate_max * 1.5)
        yaw += turn * dt
        pos = np.clip(pos + speed * dt * np.array([np.cos(yaw), np.sin(yaw)]), lo, hi)
        out_xz[k] = pos
        out_yaw[k] = yaw
    return Trajectory(np.arange(steps) * dt, out_xz, out_yaw)


# --------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Vehicle:
    """How a driving box looks: size (length, height, width) m, body and roof RGB, radar gain."""

    size: np.ndarray  # [3]
    body: np.ndarray  # [3]
    top: np.ndarray  # [3]
    radar_gain: float = 1.0

    @classmethod
    def of(cls, cfg: CarConfig | MoversConfig, radar_gain: float = 1.0) -> Vehicle:
        return cls(*(np.asarray(v, float) for v in (cfg.size, cfg.color, cfg.top_color)),
                   radar_gain)


def _slab(origin: np.ndarray, dirs: np.ndarray, half: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray / axis-aligned box (centred at 0, half extents) in the box frame.

    Returns the entry parameter [...] (inf where missed), the entry axis [...] and the
    direction component sign on that axis.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
        t1 = (-half - origin) * inv
        t2 = (half - origin) * inv
    tmin = np.minimum(t1, t2)
    tnear = tmin.max(-1)
    tfar = np.maximum(t1, t2).min(-1)
    hit = (tfar >= tnear) & (tnear > 1e-6)
    axis = tmin.argmax(-1)
    sign = np.take_along_axis(np.sign(dirs), axis[..., None], -1)[..., 0]
    return np.where(hit, tnear, np.inf), axis, sign


class NodeRenderer:
    """One sensor node: static room pre-rendered once, the car composited per frame."""

    def __init__(self, scene: SceneConfig, name: str, rng: np.random.Generator) -> None:
        cfg = scene.nodes[name]
        position = np.asarray(cfg.position, float)
        self.scene, self.name = scene, name
        cam = scene.camera
        self.camera = PinholeCamera.from_fov(
            cam.width, cam.height, cam.hfov_deg, look_at_rotation(position, cfg.look_at), position)
        light = np.asarray(cam.light_dir, float)
        self.light = light / np.linalg.norm(light)
        lo, hi = cam.light_gain
        self.gain_mid, self.gain_amp = (lo + hi) / 2, (hi - lo) / 2
        self.light_period = rng.uniform(*cam.light_period_s)
        self.light_phase = rng.uniform(0, 2 * np.pi)
        self.tint_phase = rng.uniform(0, 2 * np.pi, size=3)
        self.rays = self.camera.rays()  # [H, W, 3]
        self.car = Vehicle.of(scene.car)
        self.mover = Vehicle.of(scene.movers, scene.movers.radar_gain)
        self._render_room()
        self._radar_setup()

    # ---- static room
    def _render_room(self) -> None:
        a, p, d = self.scene.arena, self.camera.position, self.rays
        m = a.room_margin_m
        x0, x1, z0, z1 = a.x[0] - m, a.x[1] + m, a.z[0] - m, a.z[1] + m
        h, w = d.shape[:2]
        best = np.full((h, w), np.inf)
        albedo = np.tile(CEILING_RGB, (h, w, 1))
        normal = np.zeros((h, w, 3))
        with np.errstate(divide="ignore", invalid="ignore"):
            # floor y = 0
            t = np.where(d[..., 1] < -1e-9, -p[1] / d[..., 1], np.inf)
            hit = p + t[..., None] * d
            ok = (t > 0) & (hit[..., 0] >= x0) & (hit[..., 0] <= x1) & (hit[..., 2] >= z0) \
                & (hit[..., 2] <= z1)
            tile = a.floor_tile_m
            parity = (np.floor(hit[..., 0] / tile) + np.floor(hit[..., 2] / tile)) % 2
            ripple = 1.0 + 0.07 * np.sin(3.1 * hit[..., 0]) * np.cos(2.3 * hit[..., 2])
            c0, c1 = (np.asarray(c, float) for c in a.floor_colors[:2])
            floor_rgb = np.where(parity[..., None] > 0, c1, c0) * ripple[..., None]
            self._take(ok, t, floor_rgb, (0.0, 1.0, 0.0), best, albedo, normal)
            self.floor_mask = ok.copy()
            self.floor_xz = np.where(ok[..., None], hit[..., [0, 2]], np.nan)
            # walls: (axis, value, inward normal)
            walls = [(0, x0, (1, 0, 0)), (0, x1, (-1, 0, 0)), (2, z0, (0, 0, 1)),
                     (2, z1, (0, 0, -1))]
            for k, (axis, value, n) in enumerate(walls):
                t = (value - p[axis]) / d[..., axis]
                hit = p + t[..., None] * d
                other = 2 - axis
                lo_o, hi_o = (z0, z1) if other == 2 else (x0, x1)
                ok = (t > 0) & (hit[..., 1] >= 0) & (hit[..., 1] <= a.wall_height) \
                    & (hit[..., other] >= lo_o) & (hit[..., other] <= hi_o)
                colour = np.asarray(a.wall_colors[k % len(a.wall_colors)], float)
                stripe = np.where(np.floor(hit[..., 1] / a.wall_stripe_m) % 2 > 0, 0.82, 1.0)
                self._take(ok, t, colour * stripe[..., None], n, best, albedo, normal)
        self.floor_mask &= best == np.where(self.floor_mask, best, -1)  # floor still in front
        # distractor box (axis-aligned, standing on the floor)
        dist = self.scene.distractor
        if dist is not None:
            size = np.asarray(dist.size, float)
            centre = np.array([dist.center[0], size[1] / 2, dist.center[1]])
            t, axis, sign = _slab(p - centre, d, size / 2)
            ok = np.isfinite(t)
            n = np.zeros((h, w, 3))
            np.put_along_axis(n, axis[..., None], -sign[..., None], -1)
            colour = np.broadcast_to(np.asarray(dist.color, float), (h, w, 3))
            self._take(ok, t, colour, n, best, albedo, normal)
        self.floor_mask &= ~(np.isfinite(best) & ~self.floor_mask)
        shade = 0.45 + 0.55 * np.clip(normal @ self.light, 0, 1)
        shade = np.where(np.isfinite(best), shade, 1.0)
        self.bg_rgb = (albedo * shade[..., None]).astype(np.float32)
        self.bg_depth = best  # z-depth in m, inf = no return

    @staticmethod
    def _take(ok: np.ndarray, t: np.ndarray, rgb: np.ndarray, n: object, best: np.ndarray,
              albedo: np.ndarray, normal: np.ndarray) -> None:
        """Keep the nearer surface where `ok`."""
        nearer = ok & (t < best)
        best[nearer] = t[nearer]
        albedo[nearer] = rgb[nearer]
        normal[nearer] = n if not isinstance(n, np.ndarray) else n[nearer]

    # ---- per-frame camera and depth
    def light_gain(self, t_s: float) -> np.ndarray:
        """Slowly varying illumination gain per colour channel."""
        g = self.gain_mid + self.gain_amp * np.sin(2 * np.pi * t_s / self.light_period
                                                   + self.light_phase)
        tint = 1.0 + 0.06 * np.sin(2 * np.pi * t_s / (1.7 * self.light_period) + self.tint_phase)
        return (g * tint).astype(np.float32)

    def vehicles(self, xz: np.ndarray, yaw: float, movers: Sequence[tuple[np.ndarray, float]]
                 ) -> list[tuple[Vehicle, np.ndarray, float]]:
        """The car then each mover (position (x, z) m, yaw rad), with how each looks."""
        return [(self.car, xz, yaw), *((self.mover, m_xz, m_yaw) for m_xz, m_yaw in movers)]

    def render(self, xz: np.ndarray, yaw: float, t_s: float, rng: np.random.Generator,
               movers: Sequence[tuple[np.ndarray, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H, W, 3] (RGB order) and depth uint16 [H, W] (mm, 0 = hole)."""
        dcfg = self.scene.depth
        rgb = self.bg_rgb.copy()
        z = self.bg_depth.copy()
        painted = np.zeros(z.shape, bool)  # pixels showing a vehicle
        for look, v_xz, v_yaw in self.vehicles(xz, yaw, movers):
            self._paint(look, v_xz, v_yaw, rgb, z, painted)
        # camera: illumination, sensor noise
        rgb *= self.light_gain(t_s)
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * self.scene.camera.pixel_noise
        rgb_u8 = np.clip(rgb, 0, 255).astype(np.uint8)
        # depth: noise grows with z^2, range limits, dropout and silhouette-edge holes
        finite = np.isfinite(z)
        zf = np.where(finite, z, 0.0)
        zf = zf + dcfg.noise_coeff * zf ** 2 * rng.standard_normal(zf.shape)
        mm = np.round(zf * 1000.0)
        valid = finite & (mm >= dcfg.min_mm) & (mm <= dcfg.max_mm)
        valid &= rng.random(zf.shape) >= dcfg.hole_fraction
        if dcfg.edge_holes and painted.any():
            inner = painted.copy()
            inner[1:] &= painted[:-1]
            inner[:-1] &= painted[1:]
            inner[:, 1:] &= painted[:, :-1]
            inner[:, :-1] &= painted[:, 1:]
            edge = painted & ~inner
            valid &= ~(edge & (rng.random(zf.shape) < 0.5))
        depth = np.where(valid, mm, 0).astype(np.uint16)
        return rgb_u8, depth

    def _paint(self, look: Vehicle, xz: np.ndarray, yaw: float, rgb: np.ndarray, z: np.ndarray,
               painted: np.ndarray) -> None:
        """Composite one vehicle (an oriented box) and its contact shadow, nearer surface wins."""
        box = self._bbox(look, xz, yaw)
        if box is None:
            return
        r0, r1, c0, c1 = box
        rot = yaw_rotation(yaw)
        centre = np.array([xz[0], look.size[1] / 2, xz[1]])
        dirs = self.rays[r0:r1, c0:c1] @ rot  # box frame
        t, axis, sign = _slab((self.camera.position - centre) @ rot, dirs, look.size / 2)
        hit = t < z[r0:r1, c0:c1]
        # faces: 0 = front/back (length), 1 = top/bottom, 2 = sides
        n_box = np.zeros(dirs.shape)
        np.put_along_axis(n_box, axis[..., None], -sign[..., None], -1)
        n_world = n_box @ rot.T
        colour = np.where((axis == 1)[..., None], look.top, look.body)
        front = (axis == 0) & (n_box[..., 0] > 0)
        colour = np.where(front[..., None], 0.55 * look.body + 0.45 * 255.0, colour)
        shade = 0.5 + 0.5 * np.clip(n_world @ self.light, 0, 1)
        # contact shadow on the floor around the box (not on vehicles already painted)
        fxz = self.floor_xz[r0:r1, c0:c1]
        d2 = ((fxz - xz) ** 2).sum(-1)
        dark = 1.0 - SHADOW_STRENGTH * np.exp(-np.nan_to_num(d2, nan=1e9)
                                              / (2 * SHADOW_SIGMA_M ** 2))
        dark = np.where(painted[r0:r1, c0:c1], 1.0, dark)
        sub = rgb[r0:r1, c0:c1]
        sub *= dark[..., None].astype(np.float32)
        sub[hit] = (colour * shade[..., None])[hit]
        z[r0:r1, c0:c1] = np.where(hit, t, z[r0:r1, c0:c1])
        painted[r0:r1, c0:c1] |= hit

    def _bbox(self, look: Vehicle, xz: np.ndarray, yaw: float
              ) -> tuple[int, int, int, int] | None:
        """Pixel rows/cols [r0, r1) x [c0, c1) that can see a vehicle (with a shadow margin)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        centre = np.array([xz[0], look.size[1] / 2, xz[1]])
        corners = centre + (signs * look.size / 2) @ yaw_rotation(yaw).T
        # include the shadow footprint on the floor
        pad = 2.5 * SHADOW_SIGMA_M
        extra = np.array([[xz[0] + sx * pad, 0.0, xz[1] + sz * pad]
                          for sx in (-1, 1) for sz in (-1, 1)])
        pts = np.concatenate([corners, extra])
        uv, zc = self.camera.project(pts)
        h, w = self.bg_depth.shape
        if (zc <= 0.05).all():
            return None
        if (zc <= 0.05).any():
            return 0, h, 0, w
        c0, r0 = np.floor(uv.min(0)).astype(int) - 1
        c1, r1 = np.ceil(uv.max(0)).astype(int) + 2
        r0, r1, c0, c1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1

    # ---- radar
    def _radar_setup(self) -> None:
        rc = self.scene.radar
        self.range_max = rc.range_bins * rc.range_res_m
        g = rc.azimuth_grid
        xs = np.linspace(-self.range_max / 2, self.range_max / 2, g)
        ys = np.linspace(0.0, self.range_max, g)
        gx, gy = np.meshgrid(xs, ys)  # rows: forward distance, cols: lateral (x right)
        self.az_r = np.hypot(gx, gy)
        self.az_theta = np.arctan2(gx, gy)
        # static clutter from every background return within the radar field of view
        ok = np.isfinite(self.bg_depth)
        pts = self.camera.position + self.bg_depth[ok][:, None] * self.rays[ok]
        pc = self.camera.to_node(pts)
        rng_m = np.linalg.norm(pc, axis=1)
        theta = np.arctan2(pc[:, 0], pc[:, 2])
        keep = np.abs(theta) < np.radians(rc.fov_deg)
        prof, _ = np.histogram(rng_m[keep], bins=rc.range_bins, range=(0, self.range_max))
        prof = cv2.GaussianBlur(prof.astype(np.float32)[:, None], (1, 5), 1.0)[:, 0]
        prof = prof / max(prof.max(), 1e-9) * rc.clutter_amplitude
        dop = np.exp(-0.5 * ((np.arange(rc.doppler_bins) - rc.doppler_bins // 2) / 0.6) ** 2)
        self.rd_clutter = (prof[:, None] * dop[None, :]).astype(np.float32)
        hist, _, _ = np.histogram2d(pc[keep, 2], pc[keep, 0], bins=g,
                                    range=((0, self.range_max),
                                           (-self.range_max / 2, self.range_max / 2)))
        hist = cv2.GaussianBlur(hist.astype(np.float32), (5, 5), 1.2)
        self.az_clutter = hist / max(hist.max(), 1e-9) * rc.clutter_amplitude

    def _target(self, xz: np.ndarray, vel: np.ndarray, look: Vehicle | None = None
                ) -> tuple[float, float, float]:
        """Range (m), radial velocity (m/s, + = receding) and azimuth (rad) of a vehicle's
        centre (the car's unless `look` says otherwise)."""
        look = look or self.car
        centre = np.array([xz[0], look.size[1] / 2, xz[1]])
        los = centre - self.camera.position
        rng_m = float(np.linalg.norm(los))
        v_r = float(np.dot(np.array([vel[0], 0.0, vel[1]]), los / rng_m))
        pc = self.camera.to_node(centre)
        return rng_m, v_r, float(np.arctan2(pc[0], pc[2]))

    def radar(self, xz: np.ndarray, vel: np.ndarray, rng: np.random.Generator,
              movers: Sequence[tuple[np.ndarray, np.ndarray]] = ()
              ) -> tuple[np.ndarray, np.ndarray]:
        """Range-doppler [range_bins, doppler_bins] and azimuth grid [G, G], linear magnitude.

        The car at `xz` moving at `vel` (m/s), and each mover as (position, velocity).
        """
        rc, a = self.scene.radar, self.scene.arena
        rd = rng.rayleigh(rc.noise_floor, (rc.range_bins, rc.doppler_bins)) + self.rd_clutter
        az = rng.rayleigh(rc.noise_floor, self.az_r.shape) + self.az_clutter
        m = a.room_margin_m
        walls = [(0, a.x[0] - m), (0, a.x[1] + m), (1, a.z[0] - m), (1, a.z[1] + m)]
        r_bins = np.arange(rc.range_bins)
        d_bins = np.arange(rc.doppler_bins)
        sig_r = rc.range_sigma_bins * rc.range_res_m
        for look, pos, v in [(self.car, xz, vel), *((self.mover, p, u) for p, u in movers)]:
            fluct = 0.75 + 0.5 * rng.random()  # aspect-dependent RCS fluctuation
            # multipath ghost: mirror the vehicle in the nearest wall
            axis, value = min(walls, key=lambda wv: abs(pos[wv[0]] - wv[1]))
            ghost, gvel = pos.copy(), v.copy()
            ghost[axis] = 2 * value - pos[axis]
            gvel[axis] = -v[axis]
            for t_pos, t_vel, path_gain in ((pos, v, 1.0), (ghost, gvel, rc.multipath_gain)):
                r, v_r, theta = self._target(t_pos, t_vel, look)
                fov = np.exp(-((theta / np.radians(rc.fov_deg)) ** 4))
                gain = look.radar_gain * path_gain
                amp = gain * fluct * rc.car_amplitude * fov / max(r, 0.3) ** 2
                rb = r / rc.range_res_m
                db = (v_r + rc.max_speed_mps) / (2 * rc.max_speed_mps) * rc.doppler_bins
                db = float(np.clip(db, 0, rc.doppler_bins - 1))
                pr = np.exp(-0.5 * ((r_bins - rb) / rc.range_sigma_bins) ** 2)
                pd = np.exp(-0.5 * ((d_bins - db) / rc.doppler_sigma_bins) ** 2)
                rd += amp * pr[:, None] * pd[None, :]
                dth = (self.az_theta - theta + np.pi) % (2 * np.pi) - np.pi
                az += amp * np.exp(-0.5 * ((self.az_r - r) / sig_r) ** 2
                                   - 0.5 * (dth / np.radians(rc.azimuth_sigma_deg)) ** 2)
        return rd.astype(np.float32), az[::-1, ::-1].astype(np.float32)  # GDTM orientation

    def radar_peak(self, rd: np.ndarray) -> tuple[float, float]:
        """Range (m) and radial velocity (m/s) of the strongest moving return in `rd`."""
        rc = self.scene.radar
        moving = rd.copy()
        c = rc.doppler_bins // 2
        moving[:, c - 1:c + 2] = 0  # ignore static clutter
        r, dbin = np.unravel_index(np.argmax(moving), moving.shape)
        return r * rc.range_res_m, (dbin + 0.0) / rc.doppler_bins * 2 * rc.max_speed_mps \
            - rc.max_speed_mps


# --------------------------------------------------------------------------- writing
def _mocap_json(scene: SceneConfig, renderers: dict[str, NodeRenderer], xz: np.ndarray,
                yaw: float, stamp_ms: int) -> str:
    """One frame of GDTM mocap: node objects then the car ('truck'), positions in m, y up.

    Node rotations map global to local (GDTM's convention): the transpose of node -> world.
    """
    stamp = datetime.fromtimestamp(stamp_ms / 1000.0, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    objs = []
    for k, (_name, r) in enumerate(renderers.items()):
        g2l = r.camera.rotation.T
        rv = rotation_to_rotvec(g2l)
        objs.append({"id": k, "type": "node", "position": r.camera.position.tolist(),
                     "roll": rv[0], "pitch": rv[1], "yaw": rv[2],
                     "rotation": g2l.flatten().tolist(), "timestamp": stamp})
    rot = yaw_rotation(yaw)
    rv = rotation_to_rotvec(rot)
    objs.append({"id": len(renderers), "type": "truck",
                 "position": [float(xz[0]), scene.car.size[1] / 2, float(xz[1])],
                 "roll": rv[0], "pitch": rv[1], "yaw": rv[2],
                 "rotation": rot.flatten().tolist(), "timestamp": stamp})
    return json.dumps([{k: (float(v) if isinstance(v, np.floating) else v)
                        for k, v in o.items()} for o in objs])


def _metadata(scene: SceneConfig, renderers: dict[str, NodeRenderer], layout: LayoutConfig,
              frames: int, seed: int) -> dict:
    meta: dict = {}
    for name, r in renderers.items():  # GDTM-style node entries
        x, y, z = r.camera.position.tolist()
        meta[name] = {"x": x, "y": y, "z": z, "rot": r.camera.rotation.T.flatten().tolist()}
    meta["admn"] = {
        "format": FORMAT,
        "generator": {"scene": scene.name, "seed": seed, "frames": frames},
        "world": "OptiTrack frame: metres, y up; targets are (x, z)",
        "rotation_convention": "rot = row-major 3x3 global -> local (GDTM): p_local = "
                               "rot (p - T); node axes optical (x right, y down, z forward)",
        "nodes": {name: {"group": group_name(name), "camera": r.camera.intrinsics()}
                  for name, r in renderers.items()},
        "files": dict(layout.files),
        "datasets": dict(layout.datasets),
        "timing": asdict(scene.timing),
        "radar": {**asdict(scene.radar),
                  "range_doppler_axes": "rows: range bin (res range_res_m), cols: doppler "
                                        "(fftshifted, centre = 0, + = receding)",
                  "azimuth_axes": "GDTM orientation: rows far->near, cols right->left"},
        "depth": asdict(scene.depth),
    }
    if scene.movers.count:  # look-alikes in the scene, not in the mocap (only the car is)
        meta["admn"]["movers"] = asdict(scene.movers)
    return meta


def generate_recording(out_dir: str | Path, frames: int = 1000, seed: int = 0,
                       scene: str | Path | SceneConfig = "default",
                       layout: LayoutConfig | None = None, progress: bool = False) -> Path:
    """Write a synthetic recording in GDTM's upstream layout; returns its directory.

    The files are written under a temporary sibling directory and moved into `out_dir` at the
    end, so an interrupted run never leaves a half-written recording. `out_dir` may exist only
    if it is empty.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    scene = scene if isinstance(scene, SceneConfig) else load_scene(scene)
    layout = layout or load_data_config().layout
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: output exists and is not an empty directory")
    root_seq = np.random.SeedSequence([int(seed), int(scene.seed_offset)])
    # the movers' stream is spawned last, so a scene without movers draws what it always did
    traj_rng, light_rng, frame_seq, mover_rng = (np.random.default_rng(s)
                                                  for s in root_seq.spawn(4))
    tm = scene.timing
    period_ms = 1000.0 / tm.camera_hz
    stamps_ms = tm.start_ms + np.round(np.arange(frames) * period_ms).astype(np.int64)
    duration = (stamps_ms[-1] - tm.start_ms) / 1000.0 + 1.0
    traj = simulate_trajectory(scene, duration + 0.5, traj_rng)
    mover_trajs = [simulate_trajectory(scene, duration + 0.5, mover_rng)
                   for _ in range(scene.movers.count)]
    renderers = {name: NodeRenderer(scene, name, light_rng) for name in sorted(scene.nodes)}
    rng = frame_seq
    jit = tm.clock_jitter_ms

    def jitter(n: int) -> np.ndarray:
        return np.clip(rng.normal(0.0, jit, n), -3 * jit, 3 * jit) if jit > 0 else np.zeros(n)

    t_rel = (stamps_ms - tm.start_ms) / 1000.0  # seconds since the first frame
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files: dict = {}
    try:
        files = open_upstream_files(tmp, list(renderers), layout, FORMAT)
        ds = layout.datasets
        # radar capture times per node: own 4 Hz clock, first capture before the first frame
        radar_period = 1.0 / tm.radar_hz
        n_radar = int(np.ceil(duration / radar_period)) + 2
        radar_caps = {}
        for name in renderers:
            phase = rng.uniform(0.03, radar_period - 0.02)
            times = -phase + np.arange(n_radar) * radar_period + jitter(n_radar) / 1000.0
            radar_caps[name] = np.sort(times)
        radar_cache: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        xz_f, yaw_f, _ = traj.at(t_rel)
        for i in tqdm(range(frames), desc="generate", unit="frame", disable=not progress):
            ms = str(int(stamps_ms[i]))
            files["mocap", None].create_group(ms).create_dataset(
                layout.mocap, data=_mocap_json(scene, renderers, xz_f[i], yaw_f[i], int(ms)))
            cam_t = t_rel[i] + jitter(len(renderers)) / 1000.0
            for k, (name, r) in enumerate(renderers.items()):
                xz, yaw, _ = traj.at(cam_t[k:k + 1])
                movers = [(m_xz[0], float(m_yaw[0])) for m_xz, m_yaw, _ in
                          (m.at(cam_t[k:k + 1]) for m in mover_trajs)]
                rgb, depth = r.render(xz[0], float(yaw[0]), float(cam_t[k]), rng, movers)
                stamp_ns = tm.start_ms * 1_000_000 + round(cam_t[k] * 1e9)
                _ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1],
                                        [cv2.IMWRITE_JPEG_QUALITY, scene.camera.jpeg_quality])
                d = node_group(files, "rgb", name, ms).create_dataset(ds["rgb"],
                                                                      data=jpeg.reshape(-1))
                d.attrs["stamp_ns"] = stamp_ns
                d = node_group(files, "depth", name, ms).create_dataset(
                    ds["depth"], data=depth, compression="gzip", compression_opts=1)
                d.attrs["stamp_ns"] = stamp_ns
                # radar: the latest capture at or before the frame time, repeated on the grid
                cap = int(np.searchsorted(radar_caps[name], t_rel[i], side="right") - 1)
                cap = max(cap, 0)
                if name not in radar_cache or radar_cache[name][0] != cap:
                    t_cap = radar_caps[name][cap]
                    at = np.array([max(t_cap, 0.0)])
                    xz, _, vel = traj.at(at)
                    movers = [(m_xz[0], m_vel[0]) for m_xz, _, m_vel in
                              (m.at(at) for m in mover_trajs)]
                    rd, az = r.radar(xz[0], vel[0], rng, movers)
                    radar_cache[name] = (cap, rd, az)
                _, rd, az = radar_cache[name]
                t_cap = radar_caps[name][cap]
                stamp_r = tm.start_ms * 1_000_000 + round(t_cap * 1e9)
                g = node_group(files, "radar", name, ms)
                for key, arr in ((ds["radar"], rd), (ds["radar_azimuth"], az)):
                    d = g.create_dataset(key, data=arr, compression="gzip", compression_opts=1)
                    d.attrs["stamp_ns"] = stamp_r
        for f in dict.fromkeys(files.values()):
            f.close()
        meta = _metadata(scene, renderers, layout, frames, seed)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        for f in dict.fromkeys(files.values()):
            with contextlib.suppress(Exception):  # best effort on the error path
                f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def scene_renderers(scene: str | Path | SceneConfig = "default", seed: int = 0
                    ) -> dict[str, NodeRenderer]:
    """The per-node renderers of a scene (for tests and tools that need the geometry)."""
    scene = scene if isinstance(scene, SceneConfig) else load_scene(scene)
    seq = np.random.SeedSequence([int(seed), int(scene.seed_offset)])
    light_rng = np.random.default_rng(seq.spawn(3)[1])
    return {name: NodeRenderer(scene, name, light_rng) for name in sorted(scene.nodes)}
