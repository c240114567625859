"""Managed (lifecycle) nodes on rclpy's lifecycle API, for the controller and fusion nodes.

configure `load()`s: weights, the inference engine (a TensorRT build may take minutes),
publishers and subscriptions; activate starts processing; deactivate stops it and `reset()`s
what was buffered, keeping what was loaded; cleanup `free()`s what configure made. While not
active, incoming frames are ignored where they arrive (counted, never queued for later).
`autostart` (the default, as `ros2 launch` and `admn run` use it) configures and activates in
the constructor; with `autostart:=false` a lifecycle manager drives the transitions through
the node's `change_state` service. Diagnostics report the state in every state.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from admn_ros.nodes.common import STARTUP_ERRORS
from admn_ros.nodes.models import WeightsError

AUTOSTART = ("autostart", ("configure and activate at start; false = wait for a lifecycle "
                           "manager (the node's change_state service)",))
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedNode(LifecycleNode, metaclass=ABCMeta):
    """A lifecycle node; subclasses implement `load`, `reset` and `free`."""

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.state = "unconfigured"
        self.active = False
        self.loaded = False
        self.ignored = 0  # inputs that arrived while not active
        self.load_error: Exception | None = None

    @abstractmethod
    def load(self) -> None:
        """configure: load weights and engines, create publishers and subscriptions."""

    @abstractmethod
    def reset(self) -> None:
        """deactivate: forget buffered inputs and queued work; keep what `load` made."""

    @abstractmethod
    def free(self) -> None:
        """cleanup: destroy what `load` made."""

    def autostart(self, enabled: bool) -> None:
        """Configure and activate now (`autostart`); a failed configure raises its error."""
        if not enabled:
            return
        if self.trigger_configure() != SUCCESS:
            raise self.load_error or RuntimeError(f"{self.get_name()}: configure failed")
        self.trigger_activate()

    def take(self) -> bool:
        """Whether an arriving input is processed (active); otherwise it is counted and gone."""
        if not self.active:
            self.ignored += 1
        return self.active

    # ------------------------------------------------------------ lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.load()
        except Exception as exc:  # rclpy would swallow it: keep it for `autostart` to raise
            self.load_error = exc
            expected = isinstance(exc, (WeightsError, *STARTUP_ERRORS))
            self.get_logger().error(f"configure failed: {exc}"
                                    + ("" if expected else f" ({type(exc).__name__})"))
            return FAILURE
        self.loaded, self.state = True, "inactive"
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.reset()  # nothing that arrived before counts
        self.active, self.state = True, "active"
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active, self.state = False, "inactive"
        self.reset()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.free()
        self.loaded, self.state = False, "unconfigured"
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        if self.loaded:
            self.free()
            self.loaded = False
        self.state = "finalized"
        return SUCCESS

    def lifecycle_values(self) -> dict:
        """State for the diagnostics; `ready` (what `admn run` waits for) once active."""
        return {"state": self.state, "ready": int(self.active), "ignored_inactive": self.ignored}
