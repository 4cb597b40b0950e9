"""Runs a command with its standard error on a pseudo-terminal and writes
what it printed there to a file, with escape as <ESC> and a carriage return
that does not end a line as <CR>.

usage: stderr_on_pty.py OUTPUT COMMAND [ARG...]
Standard output of the command is passed through. Exits with its status."""
import os
import pty
import subprocess
import sys


def main():
    out_path, command = sys.argv[1], sys.argv[2:]
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stderr=slave)
    os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO once the command has closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    status = proc.wait()
    # The terminal turns each newline into CR LF.
    text = data.replace(b"\r\n", b"\n").replace(b"\x1b", b"<ESC>").replace(b"\r", b"<CR>")
    with open(out_path, "wb") as out:
        out.write(text)
    sys.exit(status)


if __name__ == "__main__":
    main()
