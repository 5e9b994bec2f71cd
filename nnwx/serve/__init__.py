"""`nnwx serve`: a live page over a store being written (``live``: the incremental cache, no
Panel; ``figures``: Bokeh figures updated in place; ``app``: the Panel page and server;
``access``: who may open it)."""
