"""pullwatch: detect Kubernetes scanner and unapproved image pulls, record them as Findings.

The pure core (no kopf, no kubernetes client) is: ``imageref``, ``patterns``, ``allowlist``,
``rules``, ``pulls``, ``audit``, ``records``, ``detector``, ``findings``, ``render``.
The adapters over it are ``cli`` (``pullwatch scan``) and ``kopf_app`` (``pullwatch run``).
"""

__version__ = "0.1.0"

GROUP = "pullwatch.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
