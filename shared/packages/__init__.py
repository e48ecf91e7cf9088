"""DMF data packages: the manifest format, a streaming builder and a validator (ref §7).

``manifest`` — ``Manifest.xml``/``PackageHeader.xml`` model, writer and safe reader;
``build`` — stream raw data files into a package zip; ``validate`` — reject unsafe or broken input with a
typed :class:`PackageRejected` before anything is sent.
"""

from shared.packages.errors import PackageRejected, RejectReason

__all__ = ["PackageRejected", "RejectReason"]
