"""The management web UI (`safenet ui`): browse databases, streams and events, follow them
live, watch projections, and see and shake the network. docs/ui.md shows every page.

    from eventstore.ui import UiContext, create_app   # an ASGI app over a UiContext
"""

from .app import create_app, serve, ui
from .context import UiContext

__all__ = ["UiContext", "create_app", "serve", "ui"]
