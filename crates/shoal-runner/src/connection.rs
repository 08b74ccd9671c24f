//! The controller's end of the protocol: one Unix socket that every Python process connects
//! to, a reader thread per connection, and everything they read funnelled into one channel of
//! [`Event`]s that the dispatcher alone consumes.

use std::{
    io::{BufReader, Read},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    process::{Child, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use shoal_protocol::{decode, read_frame, write_frame, FrameError, FromPython, Role, ToPython};

/// Identifies one accepted connection.
pub type ConnId = usize;

/// Something the dispatcher must react to.
#[derive(Debug)]
pub enum Event {
    /// A process connected and introduced itself; `peer` writes to it.
    Connected {
        conn: ConnId,
        hello: FromPython,
        peer: Peer,
    },
    /// A message on an introduced connection.
    Message { conn: ConnId, message: FromPython },
    /// The connection ended: cleanly (`None`) or with a protocol error.
    Closed {
        conn: ConnId,
        error: Option<FrameError>,
    },
    /// Bytes a worker wrote to its stdout or stderr.
    Output { worker: String, bytes: Vec<u8> },
    /// A worker's output ended; a last partial line can be shown.
    OutputClosed { worker: String },
    /// A process the controller started itself has exited.
    Exited {
        process: Process,
        status: ExitStatus,
    },
    /// The controller received a signal (see [`crate::signals`]).
    Signal(i32),
}

/// A process the controller started and waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Process {
    Collector,
    /// A spawned worker.
    Worker {
        id: String,
        pid: u32,
    },
}

/// The writing half of a connection.
#[derive(Debug)]
pub struct Peer {
    stream: UnixStream,
}

impl From<UnixStream> for Peer {
    fn from(stream: UnixStream) -> Self {
        Self { stream }
    }
}

impl Peer {
    /// Sends one message; an error means the process is gone, which its reader also reports.
    pub fn send(&mut self, message: &ToPython) -> Result<(), FrameError> {
        write_frame(&mut self.stream, message)
    }
}

/// Accepts connections on `socket` for as long as the process lives.
pub fn listen(socket: &Path, events: Sender<Event>) -> std::io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    thread::Builder::new()
        .name("shoal-accept".into())
        .spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let events = events.clone();
                let spawned = thread::Builder::new()
                    .name(format!("shoal-conn-{conn}"))
                    .spawn(move || read_connection(conn, stream, &events));
                if spawned.is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// How long a reader waits before it reads again while a process sends messages less than
/// twice this apart: each read that finds nothing puts the thread to sleep until the next
/// message wakes it, and on a virtual machine that wake-up costs both processes more CPU than
/// a tiny test's message itself (on two cores, 29 us per message read as each comes, 12 us
/// read a millisecond at a time). A worker running tiny tests then has a few of its
/// `test_done`s read at once, each at most this much later; messages that come further apart,
/// as long tests' do, are read as they come.
const COALESCE: Duration = Duration::from_millis(1);

fn read_connection(conn: ConnId, stream: UnixStream, events: &Sender<Event>) {
    let peer = match stream.try_clone() {
        Ok(stream) => Peer::from(stream),
        Err(e) => {
            let _ = events.send(Event::Closed {
                conn,
                error: Some(e.into()),
            });
            return;
        }
    };
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut introduced = Some(peer);
    let mut last_message: Option<Instant> = None;
    let mut busy = false;
    let error = loop {
        if busy && reader.buffer().is_empty() {
            thread::sleep(COALESCE);
        }
        let message =
            match read_frame(&mut reader).and_then(|body| body.map(|b| decode(&b)).transpose()) {
                Ok(Some(message)) => message,
                Ok(None) => break None,
                // A process that exits with unread input resets the socket: still a close.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    break None
                }
                Err(e) => break Some(e),
            };
        if let FromPython::Hello {
            role: Role::Output,
            worker: Some(worker),
            ..
        } = message
        {
            return forward_output(reader, worker, events);
        }
        let now = Instant::now();
        busy = last_message.is_some_and(|at| now - at < 2 * COALESCE);
        last_message = Some(now);
        let event = match introduced.take() {
            Some(peer) => Event::Connected {
                conn,
                hello: message,
                peer,
            },
            None => Event::Message { conn, message },
        };
        if events.send(event).is_err() {
            return;
        }
    };
    let _ = events.send(Event::Closed { conn, error });
}

/// Passes a worker's output on as it arrives, on the calling thread, until it ends.
pub fn forward_output(mut input: impl Read, worker: String, events: &Sender<Event>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let bytes = buf[..n].to_vec();
                if events
                    .send(Event::Output {
                        worker: worker.clone(),
                        bytes,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = events.send(Event::OutputClosed { worker });
}

/// Waits for a started process on a thread of its own and reports its exit.
pub fn watch(mut child: Child, process: Process, events: Sender<Event>) {
    thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = events.send(Event::Exited { process, status });
        }
    });
}
