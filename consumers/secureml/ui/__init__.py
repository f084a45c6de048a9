"""The read-only audit explorer in the browser (``secureml-audit ui``; the optional extra ``ui``).

``explorer`` reads what the pages show through the query layer, ``verification`` runs
``verify`` in the background, ``security`` guards every request (GET/HEAD only, token or basic
auth, strict headers), ``app`` is the Starlette app and ``cli`` the command.
"""
