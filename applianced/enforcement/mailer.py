"""Delivering one mail: to an SMTP smarthost (Twisted's ESMTP client) or to ``sendmail -t``.

A ``Mailer`` takes a built ``EmailMessage`` and answers a Deferred: the outcome (the SMTP
dialogue, passwords redacted, or sendmail's exit) on success, a ``DeliveryError`` on failure
(``permanent`` when retrying cannot help, e.g. a 5xx for every recipient). ``notify.py`` queues,
rate-limits and retries; the mailers only deliver. Neither blocks the reactor: SMTP is a
protocol on the reactor, sendmail a child process spawned without a shell.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from io import BytesIO
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from applianced.conf.schema import NotifyConf
from applianced.errors import ApplianceError

__all__ = ["DeliveryError", "Mailer", "SendmailMailer", "SmtpMailer", "make_mailer"]

_TRANSCRIPT_LINES = 60


class DeliveryError(ApplianceError):
    """A mail was not delivered. ``transcript`` is the SMTP dialogue (or sendmail's stderr)."""

    def __init__(self, message: str, *, permanent: bool = False, transcript: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.transcript = transcript


class Mailer(Protocol):
    """Delivers one message; ``description`` says where to (for logs and `notify test`)."""

    description: str

    def send(
        self, message: EmailMessage, sender: str, recipients: Sequence[str]
    ) -> Deferred[str]: ...


def make_mailer(reactor: Any, conf: NotifyConf) -> Mailer:
    return (
        SendmailMailer(reactor, str(conf.sendmail), conf.timeout)
        if conf.sendmail
        else (SmtpMailer(reactor, conf))
    )


def redact(transcript: str) -> str:
    """The dialogue without secrets: AUTH arguments and answers to 334 challenges."""
    out, challenged = [], False
    for line in transcript.splitlines()[-_TRANSCRIPT_LINES:]:
        if line.startswith(">>> "):
            if challenged:
                line = ">>> <redacted>"
            elif line[4:].upper().startswith("AUTH "):
                line = " ".join(line.split()[:3]) + " <redacted>"
        challenged = line.startswith("<<< 334")
        out.append(line)
    return "\n".join(out)


class SmtpMailer:
    """ESMTP to ``conf.smarthost``: STARTTLS per ``conf.starttls`` (certificate checked
    against the host name, or against ``ca_file``), AUTH when ``credentials_file`` is set."""

    def __init__(self, reactor: Any, conf: NotifyConf) -> None:
        self.reactor = reactor
        self.conf = conf
        self.description = f"smtp {conf.smarthost}:{conf.port} (starttls {conf.starttls})"

    def _credentials(self) -> tuple[bytes | None, bytes | None]:
        path = self.conf.credentials_file
        if path is None:
            return None, None
        try:
            first = path.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as e:
            raise DeliveryError(f"cannot read the SMTP credentials in {path}: {e}") from None
        user, sep, password = first.partition(":")
        if not sep or not user:
            raise DeliveryError(f"{path}: the first line must be user:password")
        return user.encode(), password.encode()

    def _tls(self) -> Any:
        if self.conf.starttls == "off":
            return None
        from twisted.internet import ssl

        trust: Any = None
        if self.conf.ca_file is not None:
            try:
                trust = ssl.Certificate.loadPEM(self.conf.ca_file.read_bytes())
            except (OSError, ValueError) as e:
                raise DeliveryError(f"cannot read ca_file {self.conf.ca_file}: {e}") from None
        return ssl.optionsForClientTLS(self.conf.smarthost, trustRoot=trust)

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> Deferred[str]:
        from twisted.mail.smtp import ESMTPSender, ESMTPSenderFactory
        from twisted.python.util import LineLog

        dialogue = {"transcript": ""}

        class Sender(ESMTPSender):
            """Keeps a longer dialogue, and hands it over on success too."""

            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)  # type: ignore[no-untyped-call]
                self.log = LineLog(_TRANSCRIPT_LINES)  # type: ignore[no-untyped-call]

            def sentMail(self, code: int, resp: bytes, ok: int, addrs: Any, log: Any) -> None:
                dialogue["transcript"] = log.str().decode("utf-8", "replace")
                super().sentMail(code, resp, ok, addrs, log)  # type: ignore[no-untyped-call]

        try:
            user, password = self._credentials()
            tls = self._tls()
        except DeliveryError as e:
            return _failed(e)
        done: Deferred[Any] = Deferred()
        factory = ESMTPSenderFactory(  # type: ignore[no-untyped-call]
            user,
            password,
            sender,
            list(recipients),
            # LF line ends: Twisted's client turns them into CRLF and dot-stuffs the lines.
            BytesIO(message.as_bytes(policy=policy.default)),
            done,
            retries=0,
            timeout=self.conf.timeout,
            contextFactory=tls,
            heloFallback=False,
            requireAuthentication=user is not None,
            requireTransportSecurity=self.conf.starttls == "required",
        )
        factory.protocol = Sender
        self.reactor.connectTCP(
            self.conf.smarthost, self.conf.port, factory, timeout=self.conf.timeout
        )

        def ok(result: Any) -> str:
            return redact(dialogue["transcript"]) or "delivered"

        return done.addCallbacks(ok, self._failed)

    def _failed(self, reason: Failure) -> str:
        """A failed delivery as the DeliveryError it raises: permanent only when the server
        refused the mail itself (5xx), with the dialogue."""
        from twisted.mail.smtp import SMTPClientError, SMTPDeliveryError

        error = reason.value
        if isinstance(error, SMTPClientError):
            text = error.resp.decode("utf-8", "replace") if error.resp else ""
            log = error.log.decode("utf-8", "replace") if error.log else ""
            code = error.code if error.code > 0 else None
            raise DeliveryError(
                f"{self.description}: {code or ''} {text}".replace("  ", " ").strip(),
                # Only a refused mail is final; a refused TLS or login waits for the admin.
                permanent=isinstance(error, SMTPDeliveryError) and 500 <= (code or 0) < 600,
                transcript=redact(log),
            )
        raise DeliveryError(f"{self.description}: {error}")


class _Feed(ProcessProtocol):
    def __init__(self, data: bytes, done: Deferred[str]) -> None:
        self.data = data
        self.done = done
        self.err = b""

    def connectionMade(self) -> None:
        self.transport.write(self.data)  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.err = (self.err + data)[-4096:]

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        output = self.err.decode("utf-8", "replace").strip()
        if self.done.called:
            return
        if code == 0:
            self.done.callback(f"sendmail exited 0{': ' + output if output else ''}")
        else:
            how = f"was killed by signal {signal}" if signal else f"exited {code}"
            self.done.errback(DeliveryError(f"sendmail {how}: {output}", transcript=output))


class SendmailMailer:
    """``sendmail -t -oi``: recipients from the headers, a lone '.' is not the end; the mail
    goes in on stdin and no shell is involved (arguments are a list)."""

    def __init__(self, reactor: Any, path: str, timeout: float = 60.0) -> None:
        self.reactor = reactor
        self.path = path
        self.timeout = timeout
        self.description = f"sendmail {path}"

    def send(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> Deferred[str]:
        done: Deferred[str] = Deferred()
        protocol = _Feed(message.as_bytes(policy=policy.default), done)
        try:
            process = self.reactor.spawnProcess(
                protocol,
                self.path,
                [self.path, "-t", "-oi", "-f", sender],
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            )
        except OSError as e:
            return _failed(DeliveryError(f"cannot run {self.path}: {e}"))

        def kill() -> None:
            if not done.called:
                done.errback(DeliveryError(f"sendmail did not finish in {self.timeout:g}s"))
                with contextlib.suppress(Exception):  # already gone
                    process.signalProcess("KILL")

        call = self.reactor.callLater(self.timeout, kill)

        def stop_timer(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        return done.addBoth(stop_timer)


def _failed(error: DeliveryError) -> Deferred[str]:
    d: Deferred[str] = Deferred()
    d.errback(error)
    return d
