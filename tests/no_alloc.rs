//! A pick allocates nothing: counted by a global allocator, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use easdirect::{Client, Instance, Options};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's layout contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn picks_allocate_nothing() {
    let list: Vec<String> = (1..=1000)
        .map(|i| format!("10.0.{}.{}:8080*{}", i / 250, i % 250 + 1, 1 + i % 5))
        .collect();
    let a = Client::new(&format!("static://{}", list.join(",")), &Options::new()).unwrap();
    let b = Client::new("static://10.0.0.1:1*5,10.0.0.2:2*1", &Options::new()).unwrap();
    let mut out = a.select().unwrap(); // the first pick on a client sets up this thread's cursor
    b.select().unwrap();
    let some: Vec<u64> = a
        .instances()
        .unwrap()
        .iter()
        .take(3)
        .map(|i| i.id)
        .collect();
    let n = allocations_during(|| {
        for _ in 0..100_000 {
            a.select_into(&[], &mut out).unwrap();
            b.select_into(&[], &mut out).unwrap();
        }
    });
    assert_eq!(n, 0, "plain picks, alternating between two clients");
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            a.select_into(&some, &mut out).unwrap();
        }
    });
    assert_eq!(n, 0, "picks with exclusions");
    a.report_failure(some[0]).unwrap();
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            a.select_into(&[], &mut out).unwrap();
        }
    });
    assert_eq!(n, 0, "picks while an ejection is in force");
    let _: Instance = out;
}
