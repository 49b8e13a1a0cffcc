"""A faithful offline WeCom simulator (wecom-api §11): WeCom's kf, media, app-message and
customer-contact APIs over HTTP, a control API for tests and demos, and encrypted callbacks.

    world = seed_world()
    app = create_simulator_app(world, callback_url="http://127.0.0.1:8000/wecom/callback")

For tests, `wxkf.simulator.testing.run_simulator` runs it on a free port in a background thread.
"""

from typing import TYPE_CHECKING

from wxkf._lazy import lazy_exports

if TYPE_CHECKING:
    from wxkf.simulator.app import create_simulator_app
    from wxkf.simulator.behaviour import Behaviour, RoutingMode
    from wxkf.simulator.clock import SimClock
    from wxkf.simulator.errors import SimError
    from wxkf.simulator.seed import seed_world
    from wxkf.simulator.world import World

# Names load on first use (PEP 562): `import wxkf.simulator.cli` for `wxkf --help` must not pull in
# the simulator's FastAPI app.
_SOURCES = {
    "create_simulator_app": "app",
    "Behaviour": "behaviour",
    "RoutingMode": "behaviour",
    "SimClock": "clock",
    "SimError": "errors",
    "seed_world": "seed",
    "World": "world",
}


__getattr__ = lazy_exports(__name__, _SOURCES)


__all__ = ["Behaviour", "RoutingMode", "SimClock", "SimError", "World", "create_simulator_app", "seed_world"]
