"""The decision stream: the part of CrowdSec's Local API that bouncers read (``lapi.py``, pure:
the decisions' JSON and the query filters; ``stream.py``, pure: each bouncer's delta;
``server.py``, twisted.web at the edge), built by ``service.py`` when ``[decisions]`` is set."""
