"""`python -m eventstore.ui`: the same as `safenet ui`."""

from .app import ui

if __name__ == "__main__":
    ui(prog_name="safenet ui")
