//! An answer the store gives at once or later. The session replies through its [`Sink`]
//! when the answer is there by the time the request returns (the memory store: the reply
//! goes out exactly as before, in order with the other replies), and through the
//! connection's outbox when it comes later (a networked store: the transport drains the
//! outbox like any delivery, and a parked connection is woken by it).
//!
//! [`Sink`]: crate::Sink

use std::sync::{Arc, Mutex, MutexGuard};

/// One pending answer: give [`Answer::done`] to the store, then call
/// [`Answer::now_or_later`].
pub(crate) struct Answer<T> {
    state: Arc<Mutex<State<T>>>,
}

enum State<T> {
    /// Neither the answer nor the caller's decision has come.
    Waiting,
    /// The answer came first.
    Ready(T),
    /// The caller gave up waiting: the answer goes here.
    Late(Box<dyn FnOnce(T) + Send>),
    /// Handed on.
    Taken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one `mem::replace`: never left half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Send + 'static> Answer<T> {
    pub(crate) fn new() -> Answer<T> {
        Answer {
            state: Arc::new(Mutex::new(State::Waiting)),
        }
    }

    /// What the store calls with the answer (once).
    pub(crate) fn done(&self) -> impl FnOnce(T) + Send + 'static {
        let state = self.state.clone();
        move |value| {
            let mut st = lock(&state);
            match std::mem::replace(&mut *st, State::Taken) {
                State::Waiting => *st = State::Ready(value),
                State::Late(later) => {
                    drop(st);
                    later(value);
                }
                State::Ready(_) | State::Taken => {}
            }
        }
    }

    /// The answer if it has come; otherwise `later` gets it when it does.
    pub(crate) fn now_or_later(self, later: impl FnOnce(T) + Send + 'static) -> Option<T> {
        let mut st = lock(&self.state);
        match std::mem::replace(&mut *st, State::Taken) {
            State::Ready(value) => Some(value),
            State::Waiting => {
                *st = State::Late(Box::new(later));
                None
            }
            State::Late(_) | State::Taken => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_came_at_once_is_returned() {
        let answer = Answer::new();
        (answer.done())(7);
        assert_eq!(answer.now_or_later(|_| panic!("not late")), Some(7));
    }

    #[test]
    fn a_late_answer_goes_to_the_late_handler() {
        let answer = Answer::new();
        let done = answer.done();
        let (tx, rx) = std::sync::mpsc::channel();
        assert_eq!(answer.now_or_later(move |v| tx.send(v).unwrap()), None);
        std::thread::spawn(move || done(9)).join().unwrap();
        assert_eq!(rx.recv().unwrap(), 9);
    }
}
