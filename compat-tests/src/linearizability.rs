//! The linearizability checker for recorded [`history`](crate::history)es of a key-value
//! store, and the durability check built on it.
//!
//! **Model.** Each key is a register, initially absent: a put sets it, a delete makes it
//! absent, a get returns its current value. A history is linearizable if every operation
//! can be given one instant between its invocation and its completion such that, in the
//! order of those instants, each get returns what the register held.
//!
//! **Algorithm.** Wing and Gong's search with Lowe's memoization ("WGL", the algorithm of
//! Porcupine and of Knossos' `linear` checker): the invocation and completion events are
//! kept in time order in a doubly linked list; the search repeatedly picks an operation
//! invoked before the first pending completion, applies it to the model, unlinks its two
//! events ("lifts" it) and goes on; when a completion is reached first it backtracks. A
//! cache of the configurations seen, (set of linearized operations as a bitset, register
//! state), cuts every path that reaches one twice. Operations whose intervals touch are
//! treated as concurrent, so equal timestamps never cause a violation. Three reductions,
//! each keeping some linearization whenever one exists, keep long histories tractable: a
//! get that fits the current state is linearized at once without branching (it can always
//! be moved there); unknown writes of the same value are linearized in invocation order
//! (they are interchangeable); and the cache key stores the bitset from its first clear
//! bit on (the search moves through the history like a window), so a key is a few words,
//! not one bit per operation. A test compares the result with a brute-force search over
//! every order on thousands of small random histories.
//!
//! **P-compositionality.** A history is linearizable if and only if its restriction to each
//! key is (Herlihy and Wing's locality), so the history is split by key and each key is
//! checked on its own: the search is exponential in the concurrency on one key, never in
//! the number of keys, and a violation is reported with its key.
//!
//! **Outcomes.** [`Outcome::Failed`] operations were not applied and are dropped.
//! [`Outcome::Unknown`] ones never return: an unknown put or delete may take effect at any
//! point after its invocation, or not at all (the search succeeds once every operation that
//! returned is linearized); one whose resulting value no get observes is dropped up front,
//! since taking effect can never help, and an unknown put of a value no other write
//! produces must take effect before the first get that saw it returned. An unknown get
//! observed nothing and is dropped.
//!
//! **Bounds.** The search on each key has a step budget and a cache-size budget
//! ([`Checker`]); a key that exhausts one is [`KeyResult::Undecided`], which is not a pass:
//! [`Report::is_linearizable`] and [`Report::into_result`] count it as a failure.
//!
//! **Durability.** [`check_durability`] appends, for each key of a final state read after
//! the test (after every operation completed), a get by a fresh client invoked after every
//! recorded time and returning the final value, and checks the whole history: an
//! acknowledged write that the final state lost (or a value nobody wrote) is then a
//! violation, while an unknown write may or may not show in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::history::{Call, Operation, Outcome, bytes};

/// The default step budget per key: a few seconds of search at most. A linearizable
/// history needs about one step per operation and event in reach; refuting one with a
/// stale read at the end of 5,000 operations on one key takes well under a second.
pub const DEFAULT_STEPS_PER_KEY: u64 = 5_000_000;

/// The default bound on the memory the configuration cache of one key may use.
pub const DEFAULT_CACHE_BYTES_PER_KEY: usize = 512 << 20;

/// The checker's bounds; [`check`] and [`check_durability`] use the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checker {
    /// Search steps per key (one step: try one event of the list) before giving up.
    pub steps_per_key: u64,
    /// Approximate bytes the configuration cache of one key may hold before giving up.
    pub cache_bytes_per_key: usize,
}

impl Default for Checker {
    fn default() -> Self {
        Self {
            steps_per_key: DEFAULT_STEPS_PER_KEY,
            cache_bytes_per_key: DEFAULT_CACHE_BYTES_PER_KEY,
        }
    }
}

/// Checks `history` with the default bounds; see [`Checker::check`].
pub fn check(history: &[Operation]) -> Report {
    Checker::default().check(history)
}

/// Checks `history` and a final state with the default bounds; see
/// [`Checker::check_durability`].
pub fn check_durability(
    history: &[Operation],
    final_state: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Report {
    Checker::default().check_durability(history, final_state)
}

/// `history` followed by one get per key of `final_state` (`None`: the key was absent), by
/// a client no operation uses, invoked after every time in `history` and returning the
/// final value; the final reads have ids from one above the highest id in `history`.
pub fn with_final_reads(
    history: &[Operation],
    final_state: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Vec<Operation> {
    let first_id = first_final_read_id(history);
    let client = history
        .iter()
        .map(|op| op.client.saturating_add(1))
        .max()
        .unwrap_or(0);
    let last = history
        .iter()
        .flat_map(|op| [Some(op.invoked), op.completed])
        .flatten()
        .max()
        .unwrap_or_default();
    let invoked = last.saturating_add(Duration::from_micros(1));
    let mut extended = history.to_vec();
    extended.extend(
        final_state
            .iter()
            .enumerate()
            .map(|(i, (key, value))| Operation {
                id: first_id.saturating_add(i),
                client,
                key: key.clone(),
                call: Call::Get,
                invoked,
                completed: Some(invoked.saturating_add(Duration::from_micros(1))),
                outcome: Outcome::Value(value.clone()),
            }),
    );
    extended
}

fn first_final_read_id(history: &[Operation]) -> usize {
    history
        .iter()
        .map(|op| op.id.saturating_add(1))
        .max()
        .unwrap_or(0)
}

impl Checker {
    /// Checks that `history` is linearizable for the per-key register model, key by key.
    pub fn check(&self, history: &[Operation]) -> Report {
        self.check_labelled(history, None)
    }

    /// Checks that `history`, followed by a read of `final_state` after everything else
    /// (see [`with_final_reads`]), is linearizable. Besides [`Checker::check`]'s
    /// violations, this finds acknowledged writes the final state lost: the final value
    /// must be what some valid order of the operations leaves, so an acknowledged put or
    /// delete can only be superseded by a write that may come after it (a later or
    /// concurrent one, possibly of unknown outcome). Keys of `history` missing from
    /// `final_state` get no final read; keys of `final_state` missing from `history` must
    /// be absent.
    pub fn check_durability(
        &self,
        history: &[Operation],
        final_state: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Report {
        let first_final = first_final_read_id(history);
        self.check_labelled(&with_final_reads(history, final_state), Some(first_final))
    }

    /// `final_reads`: ops with an id at least this are the final reads (for the text).
    fn check_labelled(&self, history: &[Operation], final_reads: Option<usize>) -> Report {
        let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
        for op in history {
            by_key.entry(&op.key).or_default().push(op);
        }
        let keys = by_key
            .into_iter()
            .map(|(key, ops)| self.check_key(key, &ops, final_reads))
            .collect();
        Report { keys }
    }

    fn check_key(&self, key: &[u8], ops: &[&Operation], final_reads: Option<usize>) -> KeyResult {
        let key = key.to_vec();
        let prepared = match Prepared::all(ops) {
            Ok(prepared) => prepared,
            Err(explanation) => return KeyResult::Malformed { key, explanation },
        };
        let search = Search::new(&prepared.ops);
        match search.run(self) {
            Verdict::Linearizable { steps } => KeyResult::Ok {
                key,
                operations: prepared.ops.len(),
                steps,
            },
            Verdict::Undecided { steps, reason } => KeyResult::Undecided {
                explanation: format!(
                    "undecided: {reason} after {steps} search steps on {} operations, \
                     so this key is neither confirmed nor refuted",
                    prepared.ops.len()
                ),
                key,
                steps,
            },
            Verdict::Violation { order, state } => {
                let (explanation, operations) =
                    explain(&prepared, &search.order, &order, state, final_reads);
                KeyResult::Violation {
                    key,
                    explanation,
                    operations,
                }
            }
        }
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyResult {
    /// Linearizable: `operations` took part (after dropping failed and unobservable
    /// ones), found in `steps` search steps.
    Ok {
        key: Vec<u8>,
        operations: usize,
        steps: u64,
    },
    /// Not linearizable; `explanation` names the operations involved (client, call,
    /// times, outcome), which are also in `operations`.
    Violation {
        key: Vec<u8>,
        explanation: String,
        operations: Vec<Operation>,
    },
    /// The search ran out of budget: neither confirmed nor refuted (not a pass).
    Undecided {
        key: Vec<u8>,
        explanation: String,
        steps: u64,
    },
    /// The history of this key cannot be checked: an operation's outcome does not fit its
    /// call (a get answered `Ok`, a put answered with a value) or its times are impossible.
    Malformed { key: Vec<u8>, explanation: String },
}

impl KeyResult {
    /// The key this verdict is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Ok { key, .. }
            | Self::Violation { key, .. }
            | Self::Undecided { key, .. }
            | Self::Malformed { key, .. } => key,
        }
    }

    /// Whether the key's history is linearizable.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }
}

impl fmt::Display for KeyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = bytes(self.key());
        match self {
            Self::Ok { operations, .. } => {
                write!(f, "key {key}: linearizable ({operations} operations)")
            }
            Self::Violation { explanation, .. }
            | Self::Undecided { explanation, .. }
            | Self::Malformed { explanation, .. } => write!(f, "key {key}: {explanation}"),
        }
    }
}

/// The verdicts on every key of a history, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: Vec<KeyResult>,
}

impl Report {
    /// Whether every key is linearizable (an undecided or malformed key is not).
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(KeyResult::is_ok)
    }

    /// The verdict on `key`, if the history has operations on it.
    pub fn get(&self, key: &[u8]) -> Option<&KeyResult> {
        self.keys.iter().find(|result| result.key() == key)
    }

    /// The keys that are not linearizable, undecided or malformed.
    pub fn problems(&self) -> impl Iterator<Item = &KeyResult> {
        self.keys.iter().filter(|result| !result.is_ok())
    }

    /// `Ok` if every key is linearizable, else an error showing every problem.
    pub fn into_result(self) -> anyhow::Result<()> {
        anyhow::ensure!(self.is_linearizable(), "{self}");
        Ok(())
    }
}

impl fmt::Display for Report {
    /// A summary line, then one paragraph per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problems = self.problems().count();
        write!(
            f,
            "{} of {} keys linearizable",
            self.keys.len() - problems,
            self.keys.len()
        )?;
        for problem in self.problems() {
            write!(f, "\n{problem}")?;
        }
        Ok(())
    }
}

/// The register: `None` is absent, `Some(i)` the `i`th distinct value of the key.
type State = Option<usize>;

/// What an operation does to, or expects of, the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Write(State),
    Read(State),
}

impl Effect {
    /// The state after applying this to `state`, or `None` if it cannot happen there.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Self::Write(next) => Some(next),
            Self::Read(seen) => (seen == state).then_some(state),
        }
    }
}

/// An operation that takes part in the search.
#[derive(Debug)]
struct Step<'a> {
    op: &'a Operation,
    effect: Effect,
    /// When it completed at the latest; `None` for an unknown write: it never returns
    /// (unless a get saw its value, see [`Prepared::all`]).
    returned: Option<Duration>,
}

/// One key's operations ready for the search, and its distinct values.
#[derive(Debug)]
struct Prepared<'a> {
    ops: Vec<Step<'a>>,
    values: Vec<&'a [u8]>,
    /// The states some put or delete produces (known or unknown).
    written: HashSet<State>,
}

impl<'a> Prepared<'a> {
    fn all(ops: &[&'a Operation]) -> Result<Self, String> {
        let mut index: HashMap<&'a [u8], usize> = HashMap::new();
        let mut values = Vec::new();
        let mut intern = |value: Option<&'a [u8]>| -> State {
            value.map(|value| {
                *index.entry(value).or_insert_with(|| {
                    values.push(value);
                    values.len() - 1
                })
            })
        };
        let mut steps = Vec::new();
        let mut malformed = Vec::new();
        for &op in ops {
            let returned = match (&op.outcome, op.completed) {
                (Outcome::Failed, _) => continue,
                (Outcome::Unknown, _) => None,
                (_, Some(completed)) if completed >= op.invoked => Some(completed),
                (_, Some(_)) => {
                    malformed.push(format!("{op}: completed before it was invoked"));
                    continue;
                }
                (_, None) => {
                    malformed.push(format!("{op}: a definite outcome without a completion"));
                    continue;
                }
            };
            let effect = match (&op.call, &op.outcome) {
                (Call::Get, Outcome::Unknown) => continue,
                (Call::Get, Outcome::Value(seen)) => Effect::Read(intern(seen.as_deref())),
                (Call::Put(value), Outcome::Ok | Outcome::Unknown) => {
                    Effect::Write(intern(Some(value)))
                }
                (Call::Delete, Outcome::Ok | Outcome::Unknown) => Effect::Write(None),
                _ => {
                    malformed.push(format!("{op}: this outcome does not answer this call"));
                    continue;
                }
            };
            steps.push(Step {
                op,
                effect,
                returned,
            });
        }
        if !malformed.is_empty() {
            return Err(format!(
                "malformed history, not checked:\n  {}",
                malformed.join("\n  ")
            ));
        }
        let observed: HashSet<State> = steps
            .iter()
            .filter_map(|step| match step.effect {
                Effect::Read(seen) => Some(seen),
                Effect::Write(_) => None,
            })
            .collect();
        // An unknown write whose value no get observes never helps a linearization: any
        // get after it reads some other write's value, so it can as well be left out.
        steps.retain(|step| match step.effect {
            Effect::Write(next) => step.returned.is_some() || observed.contains(&next),
            Effect::Read(_) => true,
        });
        // An unknown put of a value no other write produces must precede every get that saw
        // the value, so it took effect before the first of them returned, if at all.
        let mut writers: HashMap<State, usize> = HashMap::new();
        let mut first_seen: HashMap<State, Duration> = HashMap::new();
        for step in &steps {
            match (step.effect, step.returned) {
                (Effect::Write(next), _) => *writers.entry(next).or_default() += 1,
                (Effect::Read(seen), Some(returned)) => {
                    let first = first_seen.entry(seen).or_insert(returned);
                    *first = (*first).min(returned);
                }
                (Effect::Read(_), None) => {}
            }
        }
        for step in &mut steps {
            if let Effect::Write(next @ Some(_)) = step.effect
                && step.returned.is_none()
                && writers.get(&next) == Some(&1)
                && let Some(&seen) = first_seen.get(&next)
            {
                // If a get saw it before it was invoked, the search will find no place.
                step.returned = Some(seen.max(step.op.invoked));
            }
        }
        let written = steps
            .iter()
            .filter_map(|step| match step.effect {
                Effect::Write(next) => Some(next),
                Effect::Read(_) => None,
            })
            .collect();
        Ok(Self {
            ops: steps,
            values,
            written,
        })
    }
}

/// The search's list head (a sentinel event) and its "no event" link.
const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// An invocation (`is_call`) or completion event of operation `op`, in a linked list.
#[derive(Debug, Clone)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// One key's events in time order, ready to be searched.
#[derive(Debug)]
struct Search {
    /// `events[HEAD]` is the sentinel; `events[1..]` are in time order.
    events: Vec<Event>,
    /// For each operation: its completion event, if it returns.
    return_event: Vec<Option<usize>>,
    effects: Vec<Effect>,
    /// For each operation: its index among those that return, or among those that do not,
    /// in invocation order (its bit in [`Linearized`]).
    slot: Vec<usize>,
    returning: usize,
    /// For an operation that never returns: the one before it (in invocation order) that
    /// never returns either and writes the same, which must be linearized first.
    twin_before: Vec<Option<usize>>,
    /// The events in time order as (operation, is a call), for the explanation.
    order: Vec<(usize, bool)>,
}

/// How the search on one key ended.
#[derive(Debug)]
enum Verdict {
    Linearizable {
        steps: u64,
    },
    Undecided {
        steps: u64,
        reason: String,
    },
    /// The longest linearizable order found (operation indexes) and the state after it.
    Violation {
        order: Vec<usize>,
        state: State,
    },
}

/// The set of linearized operations: a bitset of those that return, kept with its first
/// clear bit so that the cache key need only hold the bits from there on (the search moves
/// through the history like a window, so the key stays a few words long), and a bitset of
/// those that never return.
#[derive(Debug)]
struct Linearized {
    returning: Vec<u64>,
    frontier: usize,
    unknown: Vec<u64>,
    lifted: Vec<bool>,
}

impl Linearized {
    fn new(search: &Search) -> Self {
        let unknown = search.effects.len() - search.returning;
        Self {
            returning: vec![0; search.returning.div_ceil(64)],
            frontier: 0,
            unknown: vec![0; unknown.div_ceil(64)],
            lifted: vec![false; search.effects.len()],
        }
    }

    fn set(&mut self, search: &Search, op: usize, value: bool) {
        self.lifted[op] = value;
        let slot = search.slot[op];
        if search.return_event[op].is_none() {
            set_bit(&mut self.unknown, slot, value);
            return;
        }
        set_bit(&mut self.returning, slot, value);
        if !value {
            self.frontier = self.frontier.min(slot);
        } else if slot == self.frontier {
            while self.frontier < search.returning && bit(&self.returning, self.frontier) {
                self.frontier += 1;
            }
        }
    }

    /// An exact encoding of the set: the frontier, the words of returning operations from
    /// the frontier's word to the last non-zero one, then the unknown ones.
    fn key(&self) -> Vec<u64> {
        let start = self.frontier / 64;
        let end = self
            .returning
            .iter()
            .rposition(|word| *word != 0)
            .map_or(start, |last| (last + 1).max(start));
        let mut key = Vec::with_capacity(2 + end - start + self.unknown.len());
        key.push(self.frontier as u64);
        key.push((end - start) as u64);
        key.extend_from_slice(&self.returning[start..end]);
        key.extend_from_slice(&self.unknown);
        key
    }
}

impl Search {
    fn new(ops: &[Step<'_>]) -> Self {
        let mut order: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, step) in ops.iter().enumerate() {
            order.push((step.op.invoked, true, i));
            if let Some(returned) = step.returned {
                order.push((returned, false, i));
            }
        }
        // At equal times invocations go first: touching intervals are concurrent.
        order.sort_by_key(|&(time, is_call, op)| (time, !is_call, op));
        let mut events = vec![Event {
            op: usize::MAX,
            is_call: false,
            prev: NIL,
            next: NIL,
        }];
        let mut return_event = vec![None; ops.len()];
        for &(_, is_call, op) in &order {
            let index = events.len();
            if let Some(last) = events.last_mut() {
                last.next = index;
            }
            events.push(Event {
                op,
                is_call,
                prev: index - 1,
                next: NIL,
            });
            if !is_call {
                return_event[op] = Some(index);
            }
        }
        let mut slot = vec![0; ops.len()];
        let mut twin_before = vec![None; ops.len()];
        let mut last_unknown_write: HashMap<State, usize> = HashMap::new();
        let (mut returning, mut unknown) = (0, 0);
        for &(_, is_call, op) in &order {
            if !is_call {
                continue;
            }
            if ops[op].returned.is_some() {
                slot[op] = returning;
                returning += 1;
            } else {
                slot[op] = unknown;
                unknown += 1;
                if let Effect::Write(next) = ops[op].effect {
                    twin_before[op] = last_unknown_write.insert(next, op);
                }
            }
        }
        Self {
            events,
            return_event,
            effects: ops.iter().map(|step| step.effect).collect(),
            slot,
            returning,
            twin_before,
            order: order
                .into_iter()
                .map(|(_, is_call, op)| (op, is_call))
                .collect(),
        }
    }

    /// Wing and Gong's search with Lowe's cache of (linearized set, state), and two
    /// reductions that keep every linearization up to reordering:
    ///
    /// * a get that fits the current state is linearized at once, and that choice is never
    ///   revisited: in any linearization from here it can be moved to the front (it changes
    ///   nothing, and every operation that must precede it is already linearized, or it
    ///   would not be a candidate);
    /// * of two operations that never return and write the same, the later-invoked one is
    ///   linearized only after the other (they can swap places).
    fn run(&self, checker: &Checker) -> Verdict {
        let mut events = self.events.clone();
        let mut linearized = Linearized::new(self);
        let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut cache_bytes = 0usize;
        // The lifted calls, each with the state before it and whether it was a forced get.
        let mut lifted: Vec<(usize, State, bool)> = Vec::new();
        let mut state: State = None;
        let mut returns_left = self.returning;
        let mut best: Vec<usize> = Vec::new();
        let mut best_state: State = None;
        let mut steps = 0u64;
        // At a configuration reached by a lift: look for a get that fits first.
        let mut arrived = true;
        let mut cursor = events[HEAD].next;
        // Once every operation that returns is linearized, the unknown ones left may take
        // effect later or never.
        while returns_left > 0 {
            if steps >= checker.steps_per_key {
                return Verdict::Undecided {
                    steps,
                    reason: format!("the step budget ({}) ran out", checker.steps_per_key),
                };
            }
            if cache_bytes > checker.cache_bytes_per_key {
                return Verdict::Undecided {
                    steps,
                    reason: format!(
                        "the cache budget ({} bytes) ran out",
                        checker.cache_bytes_per_key
                    ),
                };
            }
            steps += 1;
            // What to lift next, if anything, and whether it is a forced get.
            let mut choice = None;
            let mut dead_end = false;
            if arrived {
                arrived = false;
                let mut candidate = events[HEAD].next;
                while candidate != NIL && events[candidate].is_call {
                    let op = events[candidate].op;
                    if let Effect::Read(_) = self.effects[op]
                        && self.effects[op].apply(state).is_some()
                    {
                        choice = Some((candidate, true));
                        break;
                    }
                    candidate = events[candidate].next;
                }
                cursor = events[HEAD].next;
            } else if cursor != NIL && events[cursor].is_call {
                let op = events[cursor].op;
                let twin_done = self.twin_before[op].is_none_or(|twin| linearized.lifted[twin]);
                if matches!(self.effects[op], Effect::Write(_)) && twin_done {
                    choice = Some((cursor, false));
                }
                cursor = events[cursor].next;
            } else {
                // A completion comes before any call that fits (or, defensively, the list
                // ends): this configuration leads nowhere.
                dead_end = true;
            }
            if let Some((call, forced)) = choice {
                let op = events[call].op;
                let next = self.effects[op].apply(state).unwrap_or(state);
                linearized.set(self, op, true);
                let key = (linearized.key(), next);
                let size = key.0.len() * 8 + 64;
                if cache.insert(key) {
                    cache_bytes += size;
                    lifted.push((call, state, forced));
                    state = next;
                    lift(&mut events, call, self.return_event[op]);
                    if self.return_event[op].is_some() {
                        returns_left -= 1;
                    }
                    if lifted.len() > best.len() {
                        best = lifted.iter().map(|&(call, ..)| events[call].op).collect();
                        best_state = state;
                    }
                    arrived = true;
                    continue;
                }
                linearized.set(self, op, false);
                // A forced get already explored from here failed: so does this
                // configuration. Any other configuration seen before: try the next call.
                dead_end = forced;
            }
            if !dead_end {
                continue;
            }
            // Undo lifts back to the last free choice, and try the call after it.
            loop {
                let Some((call, previous, forced)) = lifted.pop() else {
                    return Verdict::Violation {
                        order: best,
                        state: best_state,
                    };
                };
                let op = events[call].op;
                linearized.set(self, op, false);
                state = previous;
                unlift(&mut events, call, self.return_event[op]);
                if self.return_event[op].is_some() {
                    returns_left += 1;
                }
                if !forced {
                    cursor = events[call].next;
                    break;
                }
            }
        }
        Verdict::Linearizable { steps }
    }
}

fn bit(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1u64 << (index % 64)) != 0
}

fn set_bit(bits: &mut [u64], index: usize, value: bool) {
    let (word, mask) = (index / 64, 1u64 << (index % 64));
    if value {
        bits[word] |= mask;
    } else {
        bits[word] &= !mask;
    }
}

/// Takes a call and its completion out of the list (they keep their links).
fn lift(events: &mut [Event], call: usize, ret: Option<usize>) {
    unlink(events, call);
    if let Some(ret) = ret {
        unlink(events, ret);
    }
}

/// Puts them back, in the reverse order ("dancing links").
fn unlift(events: &mut [Event], call: usize, ret: Option<usize>) {
    if let Some(ret) = ret {
        relink(events, ret);
    }
    relink(events, call);
}

fn unlink(events: &mut [Event], index: usize) {
    let (prev, next) = (events[index].prev, events[index].next);
    events[prev].next = next;
    if next != NIL {
        events[next].prev = prev;
    }
}

fn relink(events: &mut [Event], index: usize) {
    let (prev, next) = (events[index].prev, events[index].next);
    events[prev].next = index;
    if next != NIL {
        events[next].prev = index;
    }
}

/// The text of a violation, from the longest linearizable order the search found, and the
/// operations it names: that order ends in a state where the next operation to complete
/// cannot take effect, nor can any operation invoked before that completion.
fn explain(
    prepared: &Prepared<'_>,
    order: &[(usize, bool)],
    best: &[usize],
    state: State,
    final_reads: Option<usize>,
) -> (String, Vec<Operation>) {
    let ops = &prepared.ops;
    let value = |state: State| match state {
        Some(i) => prepared
            .values
            .get(i)
            .map_or_else(|| "?".to_owned(), |value| bytes(value)),
        None => "absent".to_owned(),
    };
    let describe = |op: usize| {
        let op = ops[op].op;
        match final_reads {
            Some(first) if op.id >= first => format!("{op} (the final read)"),
            _ => op.to_string(),
        }
    };
    let mut named = Vec::new();
    let mut text = String::from("not linearizable: ");
    if best.is_empty() {
        text.push_str("no operation on this key can take effect first (it starts absent).");
    } else {
        text.push_str(&format!(
            "the longest linearizable order found takes {} of the {} operations on this key, \
             ending with",
            best.len(),
            ops.len()
        ));
        let tail = best.len().saturating_sub(3);
        let last_write = best
            .iter()
            .rposition(|&op| matches!(ops[op].effect, Effect::Write(_)));
        let mut shown: Vec<Option<usize>> = Vec::new();
        match last_write {
            Some(write) if write < tail => {
                shown.push(Some(best[write]));
                if write + 1 < tail {
                    shown.push(None);
                }
            }
            _ => {}
        }
        shown.extend(best[tail..].iter().copied().map(Some));
        for line in shown {
            match line {
                Some(op) => {
                    text.push_str(&format!("\n  {}", describe(op)));
                    named.push(op);
                }
                None => text.push_str("\n  ..."),
            }
        }
        let left = match state {
            Some(_) => format!("holding {}", value(state)),
            None => "absent".to_owned(),
        };
        text.push_str(&format!("\nwhich leaves the key {left}."));
    }
    let mut in_best = vec![false; ops.len()];
    for &op in best {
        in_best[op] = true;
    }
    let remaining = |op: usize| !in_best[op];
    let Some(blocker_at) = order
        .iter()
        .position(|&(op, is_call)| !is_call && remaining(op))
    else {
        text.push_str(" The search found no way on, with no operation left to complete.");
        return (text, named.iter().map(|&op| ops[op].op.clone()).collect());
    };
    let blocker = order[blocker_at].0;
    let deadline = if ops[blocker].op.outcome == Outcome::Unknown {
        "by the time the first get that saw its value returned"
    } else {
        "before it returned"
    };
    text.push_str(&format!(
        " Next, {} must take effect {deadline}, but no operation that may go first fits:",
        describe(blocker)
    ));
    for &(op, is_call) in &order[..blocker_at] {
        // Unknown writes that may take effect here or later are no news.
        if !is_call || !remaining(op) || ops[op].returned.is_none() {
            continue;
        }
        let why = match ops[op].effect {
            Effect::Read(seen) if seen.is_some() && !prepared.written.contains(&seen) => {
                format!(
                    "would read {}; no operation on this key that may have taken effect \
                     writes {}",
                    value(state),
                    value(seen)
                )
            }
            Effect::Read(_) => format!("would read {}", value(state)),
            Effect::Write(_) => "fits here, but no way on was found after it".to_owned(),
        };
        text.push_str(&format!("\n  {}: {why}", describe(op)));
        named.push(op);
    }
    (text, named.iter().map(|&op| ops[op].op.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ClientId, History};

    const NEVER: Option<u64> = None;

    /// An operation on `key` invoked at `invoked` ms and completed at `completed` ms; its id
    /// is set by [`numbered`].
    fn op(
        client: ClientId,
        key: &str,
        call: Call,
        invoked: u64,
        completed: Option<u64>,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            id: 0,
            client,
            key: key.into(),
            call,
            invoked: Duration::from_millis(invoked),
            completed: completed.map(Duration::from_millis),
            outcome,
        }
    }

    fn put(client: ClientId, key: &str, value: &str, invoked: u64, completed: u64) -> Operation {
        op(
            client,
            key,
            Call::put(value),
            invoked,
            Some(completed),
            Outcome::Ok,
        )
    }

    fn get(
        client: ClientId,
        key: &str,
        seen: Option<&str>,
        invoked: u64,
        completed: u64,
    ) -> Operation {
        let outcome = Outcome::Value(seen.map(Into::into));
        op(client, key, Call::Get, invoked, Some(completed), outcome)
    }

    fn delete(client: ClientId, key: &str, invoked: u64, completed: u64) -> Operation {
        op(
            client,
            key,
            Call::Delete,
            invoked,
            Some(completed),
            Outcome::Ok,
        )
    }

    fn numbered(mut ops: Vec<Operation>) -> Vec<Operation> {
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = i;
        }
        ops
    }

    fn final_state(pairs: &[(&str, Option<&str>)]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        pairs
            .iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.map(Into::into)))
            .collect()
    }

    /// The violation's explanation, or a panic showing the report.
    fn violation(report: &Report, key: &str) -> String {
        match report.get(key.as_bytes()) {
            Some(KeyResult::Violation { explanation, .. }) => explanation.clone(),
            other => panic!("expected a violation on {key}, got {other:?}"),
        }
    }

    fn assert_linearizable(report: &Report) {
        assert!(report.is_linearizable(), "{report}");
    }

    #[test]
    fn a_sequential_history_passes() {
        let history = numbered(vec![
            get(1, "k", None, 0, 1),
            put(1, "k", "a", 2, 3),
            get(2, "k", Some("a"), 4, 5),
            put(2, "k", "b", 6, 7),
            get(1, "k", Some("b"), 8, 9),
            delete(3, "k", 10, 11),
            get(1, "k", None, 12, 13),
        ]);
        let report = check(&history);
        assert_linearizable(&report);
        assert!(matches!(
            report.keys.as_slice(),
            [KeyResult::Ok { operations: 7, .. }]
        ));
        assert!(report.into_result().is_ok());
    }

    #[test]
    fn an_empty_history_passes() {
        let report = check(&[]);
        assert!(report.keys.is_empty());
        assert_linearizable(&report);
    }

    #[test]
    fn concurrent_puts_and_a_get_seeing_either_value_pass() {
        for seen in ["a", "b"] {
            let history = numbered(vec![
                put(1, "k", "a", 0, 10),
                put(2, "k", "b", 1, 9),
                get(3, "k", Some(seen), 2, 8),
                get(3, "k", Some(seen), 11, 12),
            ]);
            assert_linearizable(&check(&history));
        }
        // A get overlapping both puts may even see the key still absent.
        let history = numbered(vec![
            put(1, "k", "a", 0, 10),
            put(2, "k", "b", 1, 9),
            get(3, "k", None, 2, 8),
        ]);
        assert_linearizable(&check(&history));
    }

    #[test]
    fn backtracking_finds_the_one_order_that_works() {
        // Trying put a before put b first (invocation order) must be undone.
        let history = numbered(vec![
            put(1, "k", "a", 0, 10),
            put(2, "k", "b", 1, 10),
            get(3, "k", Some("b"), 2, 3),
            get(3, "k", Some("a"), 11, 12),
        ]);
        assert_linearizable(&check(&history));
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            put(2, "k", "b", 2, 5),
            get(3, "k", Some("a"), 5, 6),
        ]);
        assert_linearizable(&check(&history));
    }

    #[test]
    fn a_stale_read_fails() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            put(2, "k", "b", 2, 3),
            get(3, "k", Some("a"), 4, 5),
        ]);
        let report = check(&history);
        assert!(!report.is_linearizable());
        let explanation = violation(&report, "k");
        assert!(
            explanation.contains(r#"#2 client 3 get "k" [4ms, 5ms] -> "a": would read "b""#),
            "{explanation}"
        );
        assert!(
            explanation.contains(r#"#1 client 2 put "k"="b" [2ms, 3ms] ok"#),
            "{explanation}"
        );
        let Some(KeyResult::Violation { operations, .. }) = report.get(b"k") else {
            unreachable!()
        };
        assert!(operations.iter().any(|op| op.id == 2), "{operations:?}");
        let error = report.into_result().unwrap_err().to_string();
        assert!(
            error.starts_with("0 of 1 keys linearizable\nkey \"k\": not"),
            "{error}"
        );
    }

    #[test]
    fn a_read_of_a_deleted_value_fails() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            delete(2, "k", 2, 3),
            get(3, "k", Some("a"), 4, 5),
        ]);
        let explanation = violation(&check(&history), "k");
        assert!(explanation.contains("would read absent"), "{explanation}");
    }

    #[test]
    fn a_lost_write_fails_the_durability_check() {
        let history = numbered(vec![put(1, "k", "a", 0, 1), put(2, "k", "b", 2, 3)]);
        assert_linearizable(&check(&history));
        assert_linearizable(&check_durability(
            &history,
            &final_state(&[("k", Some("b"))]),
        ));
        for lost in [Some("a"), None] {
            let report = check_durability(&history, &final_state(&[("k", lost)]));
            let explanation = violation(&report, "k");
            assert!(explanation.contains("(the final read)"), "{explanation}");
            assert!(explanation.contains(r#"would read "b""#), "{explanation}");
        }
        // A deleted key that comes back is lost too.
        let history = numbered(vec![put(1, "k", "a", 0, 1), delete(2, "k", 2, 3)]);
        let report = check_durability(&history, &final_state(&[("k", Some("a"))]));
        assert!(violation(&report, "k").contains("would read absent"));
    }

    #[test]
    fn the_final_reads_come_after_everything_from_a_fresh_client() {
        let history = numbered(vec![
            put(4, "k", "a", 0, 7),
            op(2, "k", Call::put("b"), 3, Some(9), Outcome::Unknown),
        ]);
        let extended = with_final_reads(&history, &final_state(&[("k", Some("a")), ("z", None)]));
        assert_eq!(extended.len(), 4);
        assert_eq!(&extended[..2], history.as_slice());
        for (read, key) in extended[2..].iter().zip(["k", "z"]) {
            assert_eq!(read.key, key.as_bytes());
            assert_eq!(read.call, Call::Get);
            assert_eq!(read.client, 5);
            assert!(read.invoked > Duration::from_millis(9));
            assert!(read.completed > Some(read.invoked));
        }
        assert_eq!((extended[2].id, extended[3].id), (2, 3));
        assert_eq!(extended[2].outcome, Outcome::found("a"));
        assert_eq!(extended[3].outcome, Outcome::absent());
    }

    #[test]
    fn the_durability_check_covers_keys_the_history_never_touched() {
        let history = numbered(vec![put(1, "k", "a", 0, 1)]);
        let absent = final_state(&[("k", Some("a")), ("z", None)]);
        assert_linearizable(&check_durability(&history, &absent));
        let invented = final_state(&[("k", Some("a")), ("z", Some("x"))]);
        let report = check_durability(&history, &invented);
        assert!(report.get(b"k").is_some_and(KeyResult::is_ok));
        assert!(violation(&report, "z").contains(r#"may have taken effect writes "x""#));
    }

    #[test]
    fn a_get_of_a_value_never_written_fails() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 10),
            get(2, "k", Some("zzz"), 1, 9),
        ]);
        let explanation = violation(&check(&history), "k");
        assert!(
            explanation.contains(r#"may have taken effect writes "zzz""#),
            "{explanation}"
        );
    }

    #[test]
    fn an_unknown_put_that_is_later_observed_passes() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::put("b"), 2, Some(3), Outcome::Unknown),
            get(3, "k", Some("a"), 10, 11),
            get(3, "k", Some("b"), 12, 13),
            get(1, "k", Some("b"), 14, 15),
        ]);
        assert_linearizable(&check(&history));
        assert_linearizable(&check_durability(
            &history,
            &final_state(&[("k", Some("b"))]),
        ));
        // Once seen, it cannot be undone...
        let mut reverted = history.clone();
        reverted.push(get(1, "k", Some("a"), 16, 17));
        violation(&check(&numbered(reverted)), "k");
        // ... nor seen before it was invoked.
        let early = numbered(vec![
            get(3, "k", Some("b"), 0, 1),
            op(2, "k", Call::put("b"), 2, NEVER, Outcome::Unknown),
        ]);
        violation(&check(&early), "k");
    }

    #[test]
    fn an_unknown_put_never_observed_passes() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::put("b"), 2, NEVER, Outcome::Unknown),
            get(3, "k", Some("a"), 10, 11),
        ]);
        let report = check(&history);
        assert_linearizable(&report);
        // Dropped up front: it can only take effect unseen.
        assert!(matches!(
            report.keys.as_slice(),
            [KeyResult::Ok { operations: 2, .. }]
        ));
        assert_linearizable(&check_durability(
            &history,
            &final_state(&[("k", Some("a"))]),
        ));
        assert_linearizable(&check_durability(
            &history,
            &final_state(&[("k", Some("b"))]),
        ));
    }

    #[test]
    fn an_unknown_put_of_a_value_also_written_elsewhere_may_come_late() {
        // The first get of "a" is explained by the acknowledged put, the last one by the
        // unknown put taking effect after the put of "b".
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::put("a"), 1, NEVER, Outcome::Unknown),
            get(3, "k", Some("a"), 2, 3),
            put(1, "k", "b", 4, 5),
            get(3, "k", Some("b"), 6, 7),
            get(3, "k", Some("a"), 10, 11),
        ]);
        assert_linearizable(&check(&history));
        // With a value of its own, it must come before the first get that saw it.
        let mut own = history;
        own[1].call = Call::put("c");
        own[2].outcome = Outcome::found("c");
        own[5].outcome = Outcome::found("c");
        violation(&check(&own), "k");
    }

    #[test]
    fn an_unknown_delete_may_or_may_not_take_effect() {
        let base = vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::Delete, 2, Some(4), Outcome::Unknown),
        ];
        for later in [[Some("a"), Some("a")], [Some("a"), None], [None, None]] {
            let mut history = base.clone();
            history.push(get(3, "k", later[0], 10, 11));
            history.push(get(3, "k", later[1], 12, 13));
            assert_linearizable(&check(&numbered(history)));
        }
        let mut history = base;
        history.push(get(3, "k", None, 10, 11));
        history.push(get(3, "k", Some("a"), 12, 13));
        violation(&check(&numbered(history)), "k");
    }

    #[test]
    fn unknown_gets_are_dropped() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::Get, 2, Some(3), Outcome::Unknown),
            op(2, "k", Call::Get, 4, NEVER, Outcome::Unknown),
        ]);
        let report = check(&history);
        assert!(matches!(
            report.keys.as_slice(),
            [KeyResult::Ok { operations: 1, .. }]
        ));
    }

    #[test]
    fn failed_operations_are_ignored() {
        let history = numbered(vec![
            put(1, "k", "a", 0, 1),
            op(2, "k", Call::put("b"), 2, Some(3), Outcome::Failed),
            op(2, "k", Call::Delete, 4, Some(5), Outcome::Failed),
            // A failed get's outcome is not looked at.
            op(3, "k", Call::Get, 6, NEVER, Outcome::Failed),
            get(3, "k", Some("a"), 10, 11),
        ]);
        let report = check(&history);
        assert!(matches!(
            report.keys.as_slice(),
            [KeyResult::Ok { operations: 2, .. }]
        ));
        // A failed put that is seen anyway was applied after all: a violation.
        let mut seen = history;
        seen.push(get(3, "k", Some("b"), 12, 13));
        violation(&check(&numbered(seen)), "k");
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = numbered(vec![
            put(1, "x", "a", 0, 1),
            put(1, "y", "a", 0, 1),
            put(2, "y", "b", 2, 3),
            put(2, "x", "b", 2, 8),
            get(3, "x", Some("a"), 4, 5),
            get(3, "y", Some("a"), 4, 5),
            put(1, "z", "c", 6, 7),
        ]);
        let report = check(&history);
        assert_eq!(report.keys.len(), 3);
        assert!(report.get(b"x").is_some_and(KeyResult::is_ok));
        assert!(report.get(b"z").is_some_and(KeyResult::is_ok));
        let explanation = violation(&report, "y");
        // Only operations on y are named.
        assert!(!explanation.contains("\"x\"") && !explanation.contains("\"z\""));
        let problems: Vec<&[u8]> = report.problems().map(KeyResult::key).collect();
        assert_eq!(problems, [b"y".as_slice()]);
        let error = report.into_result().unwrap_err().to_string();
        assert!(
            error.starts_with("2 of 3 keys linearizable\nkey \"y\": "),
            "{error}"
        );
    }

    #[test]
    fn malformed_operations_are_reported_not_checked() {
        let answers_get_with_ok = numbered(vec![op(1, "k", Call::Get, 0, Some(1), Outcome::Ok)]);
        let put_with_value = numbered(vec![op(
            1,
            "k",
            Call::put("a"),
            0,
            Some(1),
            Outcome::absent(),
        )]);
        let backwards = numbered(vec![put(1, "k", "a", 5, 4)]);
        let unfinished = numbered(vec![op(1, "k", Call::Delete, 0, NEVER, Outcome::Ok)]);
        for history in [answers_get_with_ok, put_with_value, backwards, unfinished] {
            let report = check(&history);
            assert!(!report.is_linearizable());
            assert!(
                matches!(&report.keys[..], [KeyResult::Malformed { explanation, .. }]
                    if explanation.contains("#0 client 1")),
                "{report:?}"
            );
        }
    }

    #[test]
    fn a_search_over_budget_is_undecided_not_passed() {
        let history = random_history(7, 60, 1);
        let tight = Checker {
            steps_per_key: 10,
            ..Checker::default()
        };
        let report = tight.check(&history);
        assert!(!report.is_linearizable());
        assert!(
            matches!(&report.keys[..], [KeyResult::Undecided { steps: 10, explanation, .. }]
                if explanation.contains("step budget")),
            "{report}"
        );
        let tiny_cache = Checker {
            cache_bytes_per_key: 100,
            ..Checker::default()
        };
        assert!(matches!(
            &tiny_cache.check(&history).keys[..],
            [KeyResult::Undecided { explanation, .. }] if explanation.contains("cache budget")
        ));
        assert_linearizable(&check(&history));
    }

    /// xorshift64*: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
        }
    }

    /// A linearizable history of `count` operations on `keys` keys by 5 clients: a
    /// sequential register applies each operation at its linearization point (every 100µs),
    /// and its interval reaches up to 250µs either side, so several operations overlap.
    /// Every put writes a distinct value; a few outcomes are unknown (applied or not) or
    /// failed (not applied).
    fn random_history(seed: u64, count: u64, keys: u64) -> Vec<Operation> {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut registers: Vec<Option<Vec<u8>>> = vec![None; keys as usize];
        let mut history = Vec::new();
        for i in 0..count {
            let point = 1000 + 100 * i;
            let invoked = Duration::from_micros(point - rng.below(250));
            let completed = Duration::from_micros(point + rng.below(250));
            let key = rng.below(keys) as usize;
            let call = match rng.below(10) {
                0..=3 => Call::put(format!("v{i}")),
                4..=8 => Call::Get,
                _ => Call::Delete,
            };
            let fate = rng.below(20);
            let applied = match fate {
                0 => false, // failed
                1 => true,  // unknown, applied
                2 => false, // unknown, not applied
                _ => true,
            };
            let register = &mut registers[key];
            let answer = match &call {
                Call::Get => Outcome::Value(register.clone()),
                _ => Outcome::Ok,
            };
            if applied {
                match &call {
                    Call::Put(value) => *register = Some(value.clone()),
                    Call::Delete => *register = None,
                    Call::Get => {}
                }
            }
            let outcome = match fate {
                0 => Outcome::Failed,
                1 | 2 => Outcome::Unknown,
                _ => answer,
            };
            history.push(Operation {
                id: 0,
                client: i % 5,
                key: format!("key{key}").into_bytes(),
                call,
                invoked,
                completed: (fate != 2).then_some(completed),
                outcome,
            });
        }
        history.sort_by_key(|op| op.invoked);
        numbered(history)
    }

    /// Makes a get return the value of a put q although a later put p completed between q
    /// and the get (q → p → get in real time): with distinct values, no order explains it.
    /// Returns the key.
    fn make_stale(history: &mut [Operation]) -> Option<Vec<u8>> {
        let acked_put =
            |op: &Operation| matches!(op.call, Call::Put(_)) && op.outcome == Outcome::Ok;
        for g in 0..history.len() {
            let read = &history[g];
            if read.call != Call::Get || !matches!(read.outcome, Outcome::Value(_)) {
                continue;
            }
            let before = |op: &Operation, later: &Operation| {
                op.completed
                    .is_some_and(|completed| completed < later.invoked)
            };
            let same_key = |op: &&Operation| op.key == read.key && acked_put(op);
            for p in history.iter().filter(same_key).filter(|p| before(p, read)) {
                if let Some(q) = history.iter().filter(same_key).find(|q| before(q, p)) {
                    let Call::Put(stale) = &q.call else { continue };
                    let (stale, key) = (stale.clone(), read.key.clone());
                    history[g].outcome = Outcome::Value(Some(stale));
                    return Some(key);
                }
            }
        }
        None
    }

    #[test]
    fn random_linearizable_histories_pass_and_one_stale_read_fails_them() {
        for seed in 0..20 {
            let history = random_history(seed, 200, 3);
            let overlapping = history
                .windows(2)
                .filter(|pair| pair[0].completed.is_none_or(|done| done > pair[1].invoked))
                .count();
            assert!(
                overlapping > 100,
                "seed {seed}: only {overlapping} overlaps"
            );
            assert!(history.iter().any(|op| op.outcome == Outcome::Unknown));
            assert!(history.iter().any(|op| op.outcome == Outcome::Failed));
            let report = check(&history);
            assert_eq!(report.keys.len(), 3, "seed {seed}");
            assert!(report.is_linearizable(), "seed {seed}: {report}");

            let mut stale = history.clone();
            let key = make_stale(&mut stale).expect("a get after two sequential puts");
            let report = check(&stale);
            assert_eq!(report.problems().count(), 1, "seed {seed}: {report}");
            assert!(
                matches!(report.get(&key), Some(KeyResult::Violation { .. })),
                "seed {seed}: {report}"
            );
        }
    }

    /// Whether a history of one key is linearizable, by trying every order (memoized on
    /// the set of operations placed and the value), straight from the definition.
    fn brute_force(history: &[Operation]) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|op| op.outcome != Outcome::Failed)
            .filter(|op| !(op.call == Call::Get && op.outcome == Outcome::Unknown))
            .collect();
        let returns = |op: &Operation| op.outcome != Outcome::Unknown;
        let precedes = |a: &Operation, b: &Operation| {
            returns(a) && a.completed.is_some_and(|completed| completed < b.invoked)
        };
        fn place(
            ops: &[&Operation],
            placed: u32,
            value: Option<Vec<u8>>,
            failed: &mut HashSet<(u32, Option<Vec<u8>>)>,
            returns: &dyn Fn(&Operation) -> bool,
            precedes: &dyn Fn(&Operation, &Operation) -> bool,
        ) -> bool {
            let open = |i: usize| placed & (1 << i) == 0;
            if (0..ops.len()).all(|i| !open(i) || !returns(ops[i])) {
                return true;
            }
            if failed.contains(&(placed, value.clone())) {
                return false;
            }
            for i in (0..ops.len()).filter(|&i| open(i)) {
                if (0..ops.len()).any(|j| open(j) && precedes(ops[j], ops[i])) {
                    continue;
                }
                let next = match (&ops[i].call, &ops[i].outcome) {
                    (Call::Put(written), _) => Some(written.clone()),
                    (Call::Delete, _) => None,
                    (Call::Get, Outcome::Value(seen)) if *seen == value => value.clone(),
                    _ => continue,
                };
                if place(ops, placed | (1 << i), next, failed, returns, precedes) {
                    return true;
                }
            }
            failed.insert((placed, value));
            false
        }
        place(&ops, 0, None, &mut HashSet::new(), &returns, &precedes)
    }

    /// A short history of one key with many ties and overlaps, repeated values (`values` of
    /// them), arbitrary get results and some unknown (`unknown` in 10) and failed
    /// outcomes: linearizable or not.
    fn random_small_history(rng: &mut Rng, values: usize, unknown: u64) -> Vec<Operation> {
        let values = &["a", "b", "c"][..values];
        let count = 1 + rng.below(10);
        let history = (0..count)
            .map(|i| {
                let invoked = rng.below(12);
                let completed = invoked + rng.below(5);
                let (call, answer) = match rng.below(5) {
                    0 | 1 => {
                        let value = values[rng.below(values.len() as u64) as usize];
                        (Call::put(value), Outcome::Ok)
                    }
                    2 | 3 => {
                        let seen = rng.below(values.len() as u64 + 1) as usize;
                        (
                            Call::Get,
                            Outcome::Value(values.get(seen).map(|v| (*v).into())),
                        )
                    }
                    _ => (Call::Delete, Outcome::Ok),
                };
                let fate = rng.below(10);
                let (completed, outcome) = match fate {
                    0 => (Some(completed), Outcome::Failed),
                    _ if fate > unknown => (Some(completed), answer),
                    _ if fate.is_multiple_of(2) => (NEVER, Outcome::Unknown),
                    _ => (Some(completed), Outcome::Unknown),
                };
                op(i, "k", call, invoked, completed, outcome)
            })
            .collect();
        numbered(history)
    }

    #[test]
    fn the_checker_agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng(0x5EED);
        let (mut passed, mut failed) = (0, 0);
        for case in 0..6000u32 {
            // Half of them with two values and many unknown writes.
            let history = if case.is_multiple_of(2) {
                random_small_history(&mut rng, 3, 2)
            } else {
                random_small_history(&mut rng, 2, 4)
            };
            let expected = brute_force(&history);
            let report = check(&history);
            assert_eq!(
                report.is_linearizable(),
                expected,
                "case {case}: {report}\n{}",
                history
                    .iter()
                    .map(|op| format!("{op}\n"))
                    .collect::<String>()
            );
            assert!(
                report
                    .problems()
                    .all(|p| matches!(p, KeyResult::Violation { .. }))
            );
            if expected {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        assert!(
            passed > 1500 && failed > 1500,
            "{passed} passed, {failed} failed"
        );
    }

    #[test]
    fn a_recorded_concurrent_run_against_a_locked_map_passes() {
        let history = History::new();
        let store = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
        let threads: Vec<_> = (0..4u64)
            .map(|client| {
                let (history, store) = (history.clone(), store.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(client + 1);
                    for i in 0..50 {
                        let key = format!("k{}", rng.below(2)).into_bytes();
                        let call = match rng.below(3) {
                            0 => Call::put(format!("{client}-{i}")),
                            1 => Call::Get,
                            _ => Call::Delete,
                        };
                        let op = history.invoke(client, key.clone(), call.clone());
                        let outcome = {
                            let mut store = store.lock().unwrap();
                            match call {
                                Call::Put(value) => {
                                    store.insert(key, value);
                                    Outcome::Ok
                                }
                                Call::Get => Outcome::Value(store.get(&key).cloned()),
                                Call::Delete => {
                                    store.remove(&key);
                                    Outcome::Ok
                                }
                            }
                        };
                        history.complete(op, outcome);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let ops = history.operations();
        assert_eq!(ops.len(), 200);
        assert_linearizable(&check(&ops));
        let store = store.lock().unwrap();
        let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [b"k0", b"k1"]
            .into_iter()
            .map(|key| (key.to_vec(), store.get(key.as_slice()).cloned()))
            .collect();
        assert_linearizable(&check_durability(&ops, &last));
    }
}
