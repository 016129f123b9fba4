//! Fakes of the OS traits for unit tests: a clock that only moves when the test (or the fake link)
//! moves it, and a link whose frames are scripted, so the live loops run in microseconds with no
//! privilege and no timing assumptions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Captured, Clock, Link};
use crate::wire::link::LinkType;
use crate::{Error, Result};

/// A clock at a fixed wall time plus an offset the fakes advance.
#[derive(Clone)]
pub struct FakeClock {
    base: Instant,
    base_wall: Duration,
    offset: Rc<Cell<Duration>>,
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock::new()
    }
}

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock {
            base: Instant::now(),
            base_wall: Duration::from_secs(1_800_000_000),
            offset: Rc::default(),
        }
    }

    /// Time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.offset.get()
    }

    /// The wall-clock time `offset` after the clock was made.
    pub fn wall_at(&self, offset: Duration) -> Duration {
        self.base_wall + offset
    }

    fn advance_to(&self, offset: Duration) {
        self.offset.set(self.offset.get().max(offset));
    }

    fn offset_of(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.base)
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.base + self.offset.get()
    }

    fn wall(&self) -> Duration {
        self.base_wall + self.offset.get()
    }
}

/// What a scripted link delivers: a frame, or a capture error.
pub enum Event {
    Frame(Vec<u8>),
    Error(String),
}

type Responder = Box<dyn FnMut(Duration, &[u8]) -> Vec<(Duration, Vec<u8>)>>;

/// A link on a [`FakeClock`]: frames queued with [`FakeLink::at`] (at an offset from the clock's
/// start) arrive when the loop waits past their time, and `respond` may answer each sent frame
/// with frames at later offsets.
pub struct FakeLink {
    clock: FakeClock,
    queue: RefCell<VecDeque<(Duration, Event)>>,
    respond: Responder,
    /// Every frame sent, with the offset it was sent at.
    pub sent: Vec<(Duration, Vec<u8>)>,
    /// Fail every send with this error.
    pub send_error: Option<String>,
}

impl FakeLink {
    pub fn new(clock: &FakeClock) -> FakeLink {
        FakeLink {
            clock: clock.clone(),
            queue: RefCell::default(),
            respond: Box::new(|_, _| Vec::new()),
            sent: Vec::new(),
            send_error: None,
        }
    }

    /// Answers each sent frame: `respond(offset, frame)` returns frames with their offsets.
    pub fn responding(
        mut self,
        respond: impl FnMut(Duration, &[u8]) -> Vec<(Duration, Vec<u8>)> + 'static,
    ) -> Self {
        self.respond = Box::new(respond);
        self
    }

    /// Queues an event at `offset` from the clock's start.
    pub fn at(&self, offset: Duration, event: Event) {
        let mut queue = self.queue.borrow_mut();
        let index = queue.iter().position(|(t, _)| *t > offset).unwrap_or(queue.len());
        queue.insert(index, (offset, event));
    }
}

impl Link for FakeLink {
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn send(&mut self, frame: &[u8]) -> Result<Duration> {
        if let Some(e) = &self.send_error {
            return Err(Error::could_not_run("sending on fake0", e.clone()));
        }
        let now = self.clock.elapsed();
        self.sent.push((now, frame.to_vec()));
        for (offset, reply) in (self.respond)(now, frame) {
            self.at(offset, Event::Frame(reply));
        }
        Ok(self.clock.wall())
    }

    fn next_before(&mut self, deadline: Instant) -> Result<Option<Captured>> {
        let limit = self.clock.offset_of(deadline);
        let next = {
            let mut queue = self.queue.borrow_mut();
            match queue.front() {
                Some((t, _)) if *t <= limit => queue.pop_front(),
                _ => None,
            }
        };
        match next {
            Some((t, Event::Frame(data))) => {
                self.clock.advance_to(t);
                Ok(Some(Captured { at: self.clock.wall_at(t), link: LinkType::Ethernet, data }))
            }
            Some((t, Event::Error(e))) => {
                self.clock.advance_to(t);
                Err(Error::could_not_run("reading from fake0", e))
            }
            None => {
                self.clock.advance_to(limit);
                Ok(None)
            }
        }
    }
}
