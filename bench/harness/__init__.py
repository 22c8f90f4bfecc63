"""Causeway's benchmark harness: Causeway against nginx and HAProxy on the same origins, load and CPUs.

Modules: :mod:`.procs` (pinned processes and cleanup), :mod:`.peers` (proxies and origins),
:mod:`.load` (oha and result counting), :mod:`.scenarios` (what is measured),
:mod:`.report` (JSON, PNG, RESULT line), :mod:`.install` (tools).
"""
