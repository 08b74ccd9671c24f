//! The controller's end of the protocol: one Unix socket that every Python process connects
//! to, one thread that accepts and reads every connection, and everything it reads funnelled
//! into one channel of [`Event`]s that the dispatcher alone consumes.

use std::{
    io::{self, Read},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    process::{Child, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use rustix::{
    event::{poll, PollFd, PollFlags},
    io::Errno,
};
use shoal_protocol::{decode, write_frame, FrameError, FromPython, Role, ToPython, MAX_FRAME_LEN};

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

/// Accepts connections on `socket` and reads every one of them, on one thread, for as long as
/// the process lives.
pub fn listen(socket: &Path, events: Sender<Event>) -> io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    thread::Builder::new()
        .name("shoal-connections".into())
        .spawn(move || Connections::new(listener, events).run())?;
    Ok(())
}

/// How long the reader waits before it reads again while some process sends messages less than
/// twice this apart: every wait for input that finds nothing puts the thread to sleep until
/// the next message wakes it, and on a virtual machine that wake-up costs both processes more
/// CPU than a tiny test's message itself (on two cores, 29 us per message read as each comes,
/// 12 us read a millisecond at a time). Workers running tiny tests then have a few of their
/// `test_done`s read at once, each at most this much later; when every process sends further
/// apart, as long tests' workers do, messages are read as they come.
const COALESCE: Duration = Duration::from_millis(1);

/// The most one connection's read takes at a time, so that one busy process does not keep the
/// others waiting.
const READ_SIZE: usize = 1 << 16;

/// Every connection, read by one thread that waits on all of them with `poll`. One thread, not
/// one per connection: at many workers each reader's wake-ups and sleeps were the larger part
/// of the controller's CPU per test, and one thread pays them once for all.
struct Connections {
    listener: UnixListener,
    events: Sender<Event>,
    open: Vec<Connection>,
    accepted: ConnId,
}

struct Connection {
    id: ConnId,
    stream: UnixStream,
    /// Bytes read but not yet a whole frame (or, for an output stream, not yet passed on).
    pending: Vec<u8>,
    kind: Kind,
    last_message: Option<Instant>,
}

enum Kind {
    /// Its first message, the process's hello, is still to come; the peer goes with it.
    Unintroduced(Peer),
    Messages,
    /// A worker's stdout and stderr, passed on as bytes.
    Output {
        worker: String,
    },
}

/// What reading a connection once came to.
enum ReadOutcome {
    /// It is still open; `busy` if it sent messages less than 2 x [`COALESCE`] apart.
    Open { busy: bool },
    /// It ended, and was reported.
    Ended,
    /// The dispatcher is gone: nobody is left to read for.
    Abandoned,
}

impl Connections {
    fn new(listener: UnixListener, events: Sender<Event>) -> Self {
        Self {
            listener,
            events,
            open: Vec::new(),
            accepted: 0,
        }
    }

    fn run(mut self) {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let ready = match self.wait() {
                Ok(ready) => ready,
                Err(e) if e == Errno::INTR => continue,
                Err(e) => return self.abandon(e),
            };
            if ready[0] {
                self.accept();
            }
            let mut busy = false;
            let mut index = 0;
            for &ready in &ready[1..] {
                if !ready {
                    index += 1;
                    continue;
                }
                match self.open[index].read(&mut buf, &self.events) {
                    ReadOutcome::Open { busy: b } => {
                        busy |= b;
                        index += 1;
                    }
                    ReadOutcome::Ended => {
                        self.open.remove(index);
                    }
                    ReadOutcome::Abandoned => return,
                }
            }
            if busy {
                thread::sleep(COALESCE);
            }
        }
    }

    /// Waits until the listener or a connection has something to read: which of them do, the
    /// listener first.
    fn wait(&self) -> Result<Vec<bool>, Errno> {
        let mut fds: Vec<PollFd<'_>> = std::iter::once(PollFd::new(&self.listener, PollFlags::IN))
            .chain(
                self.open
                    .iter()
                    .map(|c| PollFd::new(&c.stream, PollFlags::IN)),
            )
            .collect();
        poll(&mut fds, None)?;
        Ok(fds.iter().map(|fd| !fd.revents().is_empty()).collect())
    }

    /// `poll` itself failed, and nothing can be read any more: every process still connected
    /// is reported gone, so that the dispatcher handles it as a process that broke its
    /// connection rather than wait for it for ever.
    fn abandon(mut self, error: Errno) {
        for connection in &mut self.open {
            let error = FrameError::Io(io::Error::from_raw_os_error(error.raw_os_error()));
            if let ReadOutcome::Abandoned = connection.end(Some(error), &self.events) {
                return;
            }
        }
    }

    fn accept(&mut self) {
        let Ok((stream, _)) = self.listener.accept() else {
            return;
        };
        let id = self.accepted;
        self.accepted += 1;
        match stream.try_clone() {
            Ok(writer) => self.open.push(Connection {
                id,
                stream,
                pending: Vec::new(),
                kind: Kind::Unintroduced(Peer::from(writer)),
                last_message: None,
            }),
            Err(e) => {
                let _ = self.events.send(Event::Closed {
                    conn: id,
                    error: Some(e.into()),
                });
            }
        }
    }
}

impl Connection {
    /// Reads what the socket holds (it is ready: the read does not block) and passes on every
    /// whole frame in it.
    fn read(&mut self, buf: &mut [u8], events: &Sender<Event>) -> ReadOutcome {
        let got = match self.stream.read(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return ReadOutcome::Open { busy: false }
            }
            // A process that exits with unread input resets the socket: still a close.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return self.end(None, events),
            Err(e) => return self.end(Some(e.into()), events),
        };
        if got == 0 {
            let error = (!self.pending.is_empty()).then_some(FrameError::Truncated {
                got: self.pending.len(),
            });
            return self.end(error, events);
        }
        self.pending.extend_from_slice(&buf[..got]);
        match self.pass_on(events) {
            Ok(busy) => ReadOutcome::Open { busy },
            Err(Some(error)) => self.end(Some(error), events),
            Err(None) => ReadOutcome::Abandoned,
        }
    }

    /// Sends on every whole frame read so far (an output stream's bytes as they are); `Err`
    /// with the error that ends the connection, or `None` when the dispatcher is gone.
    fn pass_on(&mut self, events: &Sender<Event>) -> Result<bool, Option<FrameError>> {
        let mut taken = 0;
        let mut busy = false;
        while !matches!(self.kind, Kind::Output { .. }) {
            let Some(header) = self.pending.get(taken..taken + 4) else {
                break;
            };
            let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
            if len > MAX_FRAME_LEN {
                return Err(Some(FrameError::TooLarge { len }));
            }
            let Some(body) = self.pending.get(taken + 4..taken + 4 + len) else {
                break;
            };
            let message: FromPython = decode(body).map_err(Some)?;
            taken += 4 + len;
            let now = Instant::now();
            busy = self.last_message.is_some_and(|at| now - at < 2 * COALESCE);
            self.last_message = Some(now);
            if let Some(event) = self.event_for(message) {
                events.send(event).map_err(|_| None)?;
            }
        }
        self.pending.drain(..taken);
        if let Kind::Output { worker } = &self.kind {
            if !self.pending.is_empty() {
                let bytes = std::mem::take(&mut self.pending);
                let worker = worker.clone();
                events
                    .send(Event::Output { worker, bytes })
                    .map_err(|_| None)?;
            }
        }
        Ok(busy)
    }

    /// The event a message makes: the first introduces its process, unless it is an output
    /// stream's hello, which turns the rest of the connection into bytes and makes none.
    fn event_for(&mut self, message: FromPython) -> Option<Event> {
        if let FromPython::Hello {
            role: Role::Output,
            worker: Some(worker),
            ..
        } = message
        {
            self.kind = Kind::Output { worker };
            return None;
        }
        let conn = self.id;
        Some(match std::mem::replace(&mut self.kind, Kind::Messages) {
            Kind::Unintroduced(peer) => Event::Connected {
                conn,
                hello: message,
                peer,
            },
            Kind::Messages | Kind::Output { .. } => Event::Message { conn, message },
        })
    }

    fn end(&mut self, error: Option<FrameError>, events: &Sender<Event>) -> ReadOutcome {
        let event = match &self.kind {
            Kind::Output { worker } => Event::OutputClosed {
                worker: worker.clone(),
            },
            _ => Event::Closed {
                conn: self.id,
                error,
            },
        };
        match events.send(event) {
            Ok(()) => ReadOutcome::Ended,
            Err(_) => ReadOutcome::Abandoned,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crossbeam_channel::{unbounded, Receiver};

    use super::*;

    fn frame(json: &str) -> Vec<u8> {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json.as_bytes());
        frame
    }

    const WORKER_HELLO: &str =
        r#"{"type":"hello","protocol":9,"role":"worker","worker":"gw0","pid":7}"#;
    const OUTPUT_HELLO: &str =
        r#"{"type":"hello","protocol":9,"role":"output","worker":"gw0","pid":7}"#;

    /// A connection as the reader holds it, the process's end of it, and the events it makes.
    fn connection() -> (Connection, UnixStream, Receiver<Event>, Sender<Event>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let writer = ours.try_clone().unwrap();
        let connection = Connection {
            id: 3,
            stream: ours,
            pending: Vec::new(),
            kind: Kind::Unintroduced(Peer::from(writer)),
            last_message: None,
        };
        let (sender, receiver) = unbounded();
        (connection, theirs, receiver, sender)
    }

    fn read(connection: &mut Connection, events: &Sender<Event>) -> ReadOutcome {
        connection.read(&mut vec![0u8; READ_SIZE], events)
    }

    #[test]
    fn a_frame_split_across_reads_is_one_message() {
        let (mut connection, mut process, events, sender) = connection();
        let hello = frame(WORKER_HELLO);
        process.write_all(&hello[..3]).unwrap();
        assert!(matches!(
            read(&mut connection, &sender),
            ReadOutcome::Open { .. }
        ));
        process.write_all(&hello[3..10]).unwrap();
        assert!(matches!(
            read(&mut connection, &sender),
            ReadOutcome::Open { .. }
        ));
        assert!(events.is_empty(), "no message before its frame is whole");
        let mut rest = hello[10..].to_vec();
        rest.extend(frame(r#"{"type":"test_start","index":4}"#));
        process.write_all(&rest).unwrap();
        read(&mut connection, &sender);
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Connected {
                conn: 3,
                hello: FromPython::Hello { pid: 7, .. },
                ..
            })
        ));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Message {
                conn: 3,
                message: FromPython::TestStart { index: 4 }
            })
        ));
    }

    #[test]
    fn a_process_that_ends_inside_a_frame_is_reported_with_how_far_it_got() {
        let (mut connection, mut process, events, sender) = connection();
        process.write_all(&frame(WORKER_HELLO)[..20]).unwrap();
        read(&mut connection, &sender);
        drop(process);
        assert!(matches!(read(&mut connection, &sender), ReadOutcome::Ended));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Closed {
                conn: 3,
                error: Some(FrameError::Truncated { got: 20 })
            })
        ));
    }

    #[test]
    fn an_output_stream_passes_on_what_follows_its_hello_as_bytes() {
        let (mut connection, mut process, events, sender) = connection();
        let mut bytes = frame(OUTPUT_HELLO);
        bytes.extend_from_slice(b"printed\n");
        process.write_all(&bytes).unwrap();
        read(&mut connection, &sender);
        match events.try_recv() {
            Ok(Event::Output { worker, bytes }) => {
                assert_eq!(
                    (worker.as_str(), bytes.as_slice()),
                    ("gw0", &b"printed\n"[..])
                )
            }
            other => panic!("expected the output, got {other:?}"),
        }
        drop(process);
        assert!(matches!(read(&mut connection, &sender), ReadOutcome::Ended));
        assert!(matches!(events.try_recv(), Ok(Event::OutputClosed { worker }) if worker == "gw0"));
    }

    #[test]
    fn a_frame_over_the_limit_ends_the_connection_before_its_body_is_read() {
        let (mut connection, mut process, events, sender) = connection();
        process.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(read(&mut connection, &sender), ReadOutcome::Ended));
        assert!(matches!(
            events.try_recv(),
            Ok(Event::Closed {
                error: Some(FrameError::TooLarge { .. }),
                ..
            })
        ));
    }
}
