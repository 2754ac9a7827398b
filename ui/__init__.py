"""``relaygraph ui``: the run and trace viewer, a FastAPI app on 127.0.0.1.

Pages: the runs under the given folders (`catalog`), one run's items with filters and
plots, one trace's timeline and steps (`views`), two runs compared, and a server's
traces as they finish (`live`). `app` builds the FastAPI app, `mount` puts it inside
``relaygraph serve`` at ``/ui``; templates and static files ship in the package and load
nothing from elsewhere.
"""

from relaygraph.ui.app import create_ui_app
from relaygraph.ui.catalog import Catalog
from relaygraph.ui.mount import mount_viewer

__all__ = ["Catalog", "create_ui_app", "mount_viewer"]
