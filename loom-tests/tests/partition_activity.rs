//! A partition's reclamation (`Activity` in `core/src/partition.rs`): a group's last occupant
//! retiring its member while new calls for the group arrive. Runs the real activity word; the
//! map (`papaya`, linearizable, its own tests' business) is a mutex around one slot here, with
//! `find_or_create`'s exact steps: get, enter, or take a dead member's place if its retirer has
//! not (one swap of the member's `place` decides), remove it by identity and retry, or create a
//! member born entered and `try_insert` it; and `leave`'s: the retirer gives the place back
//! (unless a caller inherited it) before the removal.
#![cfg(busline_loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};

use busline::model::Activity;
use busline_loom_tests::harness::{Bug, model, model_broken};

/// One group's instance.
struct Member {
    id: usize,
    activity: Activity,
    /// Set by the member's retirer.
    retired: AtomicBool,
    /// Whether the member still holds its place in `live` (taken by one swap: its retirer's,
    /// or a caller's that inherits it).
    place: AtomicBool,
}

impl Member {
    fn new(id: usize) -> Arc<Member> {
        Arc::new(Member { id, activity: Activity::entered(), retired: AtomicBool::new(false), place: AtomicBool::new(true) })
    }
}

/// One group's slot of the map, and what the model watches.
struct Group {
    slot: Mutex<Option<Arc<Member>>>,
    /// Members created (the next one's id).
    created: AtomicUsize,
    /// Places held: by members inserted whose place is not yet given back, and by creators
    /// (the partition's `live`).
    live: AtomicUsize,
    /// The member of every call now inside the group (one entry per occupant).
    inside: Mutex<Vec<usize>>,
}

impl Group {
    /// A group whose member 0 has one occupant (its creator), as after a first call's enter.
    fn with_first_occupant() -> (Arc<Group>, Arc<Member>) {
        let first = Member::new(0);
        let group = Arc::new(Group {
            slot: Mutex::new(Some(Arc::clone(&first))),
            created: AtomicUsize::new(1),
            live: AtomicUsize::new(1),
            inside: Mutex::new(vec![0]),
        });
        (group, first)
    }

    /// `Partition::find_or_create`, then the occupant's check-in.
    fn enter(&self) -> Arc<Member> {
        let member = loop {
            let found = self.slot.lock().unwrap().clone();
            let inherited = match found {
                Some(member) if member.activity.enter() => break member,
                Some(member) => {
                    // Retired, its retirer not yet done: inherit its place unless the retirer
                    // gave it back first, and remove it ourselves (by identity).
                    let inherited = member.place.swap(false, SeqCst);
                    let mut slot = self.slot.lock().unwrap();
                    if slot.as_ref().is_some_and(|m| Arc::ptr_eq(m, &member)) {
                        *slot = None;
                    }
                    if !inherited {
                        continue;
                    }
                    true
                }
                None => false,
            };
            if !inherited {
                // A reservation (the model has no bound).
                self.live.fetch_add(1, SeqCst);
            }
            let id = self.created.fetch_add(1, SeqCst);
            let member = Member::new(id);
            let mut slot = self.slot.lock().unwrap();
            if slot.is_none() {
                *slot = Some(Arc::clone(&member));
                break member;
            }
            // Lost the insert: the place lapses.
            self.live.fetch_sub(1, SeqCst);
        };
        let mut inside = self.inside.lock().unwrap();
        assert!(
            inside.iter().all(|&id| id == member.id),
            "partition broken: two instances of one group have occupants at once: {:?} and {}",
            *inside,
            member.id
        );
        inside.push(member.id);
        member
    }

    /// The occupant's check-out, then `Partition::leave`.
    fn leave(&self, member: &Arc<Member>) {
        {
            let mut inside = self.inside.lock().unwrap();
            let at = inside.iter().position(|&id| id == member.id).expect("checked in");
            inside.swap_remove(at);
        }
        if member.activity.leave() {
            assert!(!member.retired.swap(true, SeqCst), "partition broken: member {} retired twice", member.id);
            // The place first, unless a caller of the group inherited it.
            if member.place.swap(false, SeqCst) {
                self.live.fetch_sub(1, SeqCst);
            }
            let mut slot = self.slot.lock().unwrap();
            if slot.as_ref().is_some_and(|m| Arc::ptr_eq(m, member)) {
                *slot = None;
            }
        }
    }
}

/// The first occupant leaves while two new calls come for the group and leave again.
fn retire_vs_enter() {
    let (group, first) = Group::with_first_occupant();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let group = Arc::clone(&group);
            loom::thread::spawn(move || {
                let member = group.enter();
                group.leave(&member);
            })
        })
        .collect();
    group.leave(&first);
    for call in calls {
        call.join().unwrap();
    }
    // Every call was served (each entered a member), and nothing stays behind.
    assert_eq!(group.live.load(SeqCst), 0, "every place given back exactly once (by a retirer, or by an inheritor's member)");
    assert!(group.slot.lock().unwrap().is_none(), "no member left in the map");
    assert!(group.inside.lock().unwrap().is_empty());
}

/// Proves: a call never enters a member that is being retired, so a group's instances never
/// overlap (`Serial` stays one at a time across reclamations), every member is retired exactly
/// once, every place is given back exactly once, whether its retirer or a caller that found
/// the member dead took it (`live_groups` returns to 0), and no member stays in the map.
#[test]
fn a_retiring_group_never_overlaps_its_successor() {
    model("partition_retire_vs_enter", retire_vs_enter);
}

/// Proves the model can fail: with the retirement a plain store of `DEAD` instead of a CAS
/// from zero (`Bug::Retire`), a call that enters between the last occupant's decrement and
/// that store is inside a member the retirer then removes: the next call creates a second
/// instance beside it, or that call, leaving, retires the member a second time (loom finds
/// the latter first).
#[test]
#[should_panic(expected = "partition broken")]
fn broken_retire_is_caught() {
    model_broken("broken_retire", Bug::Retire, retire_vs_enter);
}
