"""Backend errors: the C core returns -errno values; Python raises one type, IPVSError."""
from __future__ import annotations

import errno as _errno


class IPVSError(OSError):
    """A failure talking to IPVS in one namespace.

    ``errno`` is the positive errno (ENOENT: namespace path missing,
    EPROTONOSUPPORT: ip_vs not loaded, EPERM: no CAP_SYS_ADMIN/CAP_NET_ADMIN,
    ETIMEDOUT: the kernel did not answer in time, EBADMSG: malformed reply).
    """

    def __init__(self, err: int, message: str):
        super().__init__(abs(err), message)

    def __str__(self) -> str:  # one clear log line
        return f"{self.strerror} ({_errno.errorcode.get(self.errno, self.errno)})"
