//! Fresh memory for a large result, faulted in ahead on another core.
//!
//! A million log dicts take about 1 GB of new memory from CPython's object allocator, which takes it from the
//! kernel in 1 MiB arenas (`mmap`); every 4 KiB page then costs a page fault on its first touch, 2.5-3 us on the
//! shared machines this project is measured on: a fifth of the time spent making the dicts. While `log_dicts`
//! runs, `Prefault` hands CPython arenas that a helper thread has already mapped with `MAP_POPULATE` (the kernel
//! fills the pages in one call, without a fault each, on the core the pass does not use).
//!
//! The arenas are plain anonymous mappings of the size CPython asks for, so the interpreter's own allocator, put
//! back when the pass ends, frees them later as it frees its own (`munmap`). It is only installed over the
//! interpreter's own arena allocator (found in the same binary as `PyObject_Malloc`), never over one a host
//! program installed, and never twice; anything it cannot serve at once (no arena ready, another size) goes to
//! the interpreter's allocator, so it can only make a pass faster, never wait.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use pyo3::prelude::*;

/// CPython's `PyObjectArenaAllocator` (cpython/objimpl.h, unchanged since 3.4; not in the limited API).
#[repr(C)]
#[derive(Clone, Copy)]
struct ArenaAllocator {
    ctx: *mut c_void,
    alloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize)>,
}

extern "C" {
    fn PyObject_GetArenaAllocator(allocator: *mut ArenaAllocator);
    fn PyObject_SetArenaAllocator(allocator: *mut ArenaAllocator);
    fn PyObject_Malloc(size: usize) -> *mut c_void;
}

/// CPython's arena size on 64-bit builds since 3.10 (`ARENA_BITS` 20); requests of other sizes are passed on.
const ARENA: usize = 1 << 20;
/// Arenas the helper keeps ready ahead of the pass at most: it mostly runs ahead of the pass, whose rows take
/// longer to make than their pages take to map.
const AHEAD: usize = 64;

/// Arenas handed to CPython from a helper's mappings, in this process so far (`arenas_prefaulted`).
static SERVED: AtomicUsize = AtomicUsize::new(0);

struct Shared {
    interpreter: ArenaAllocator,
    ready: Mutex<VecDeque<usize>>,
    wanted: Condvar,
    stop: AtomicBool,
}

// SAFETY: the helper thread touches only `ready`, `wanted` and `stop`; `interpreter` (a context pointer and two
// functions) is used only by `alloc` and `free`, which CPython calls with the GIL held.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

unsafe extern "C" fn alloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: ctx is the `Shared` of the installed `Prefault`, alive until its allocator is replaced.
    let shared = unsafe { &*(ctx as *const Shared) };
    if size == ARENA {
        // Never waits: the helper holds the lock only to add an arena (and a lock a fork left held stays held).
        let ready = shared.ready.try_lock().ok().and_then(|mut ready| {
            let found = ready.pop_front();
            shared.wanted.notify_one();
            found
        });
        if let Some(address) = ready {
            SERVED.fetch_add(1, Ordering::Relaxed);
            return address as *mut c_void;
        }
    }
    match shared.interpreter.alloc {
        // SAFETY: the interpreter's own allocator with its own context.
        Some(interpreter) => unsafe { interpreter(shared.interpreter.ctx, size) },
        None => std::ptr::null_mut(), // never: checked when installed (CPython raises MemoryError)
    }
}

unsafe extern "C" fn free(ctx: *mut c_void, address: *mut c_void, size: usize) {
    // SAFETY: as in `alloc`; every arena, ours or the interpreter's, is an anonymous mapping of `size` bytes.
    let shared = unsafe { &*(ctx as *const Shared) };
    if let Some(interpreter) = shared.interpreter.free {
        // SAFETY: the interpreter's own allocator with its own context, freeing an arena of `size` bytes.
        unsafe { interpreter(shared.interpreter.ctx, address, size) }
    }
}

/// Arenas handed to CPython from mappings faulted in ahead, in this process so far.
#[pyfunction]
pub fn arenas_prefaulted() -> usize {
    SERVED.load(Ordering::Relaxed)
}

/// Whether `function` lies in the binary that holds `PyObject_Malloc` (the interpreter's own code).
fn in_interpreter(function: *const c_void) -> bool {
    // SAFETY: dladdr only reads the loader's tables; both pointers are code addresses.
    unsafe {
        let mut theirs: libc::Dl_info = std::mem::zeroed();
        let mut ours: libc::Dl_info = std::mem::zeroed();
        libc::dladdr(function, &mut theirs) != 0
            && libc::dladdr(PyObject_Malloc as *const c_void, &mut ours) != 0
            && !theirs.dli_fbase.is_null()
            && theirs.dli_fbase == ours.dli_fbase
    }
}

/// Arenas faulted in ahead while it lives (about `bytes` of them); the interpreter's allocator back when dropped.
pub(crate) struct Prefault {
    shared: Arc<Shared>,
    helper: Option<JoinHandle<()>>,
}

impl Prefault {
    /// Installed over the interpreter's own arena allocator, or None (another allocator, or already installed).
    /// Must be called, and dropped, with the GIL held.
    pub(crate) fn start(bytes: usize) -> Option<Prefault> {
        let mut interpreter = ArenaAllocator { ctx: std::ptr::null_mut(), alloc: None, free: None };
        // SAFETY: fills the struct; the GIL is held.
        unsafe { PyObject_GetArenaAllocator(&mut interpreter) };
        let (Some(current), Some(_)) = (interpreter.alloc, interpreter.free) else {
            return None;
        };
        // The interpreter's own allocator has no context; any other was installed by the host program.
        if !interpreter.ctx.is_null() || !in_interpreter(current as *const c_void) {
            return None;
        }
        let shared = Arc::new(Shared {
            interpreter,
            ready: Mutex::new(VecDeque::new()),
            wanted: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let arenas = bytes.div_ceil(ARENA);
        let helper_shared = Arc::clone(&shared);
        let helper = std::thread::Builder::new()
            .name("secureml-prefault".into())
            .spawn(move || fill(&helper_shared, arenas))
            .ok()?;
        let mut ours =
            ArenaAllocator { ctx: Arc::as_ptr(&shared) as *mut c_void, alloc: Some(alloc), free: Some(free) };
        // SAFETY: the GIL is held; `shared` outlives the installation (restored in `drop` before it is released).
        unsafe { PyObject_SetArenaAllocator(&mut ours) };
        Some(Prefault { shared, helper: Some(helper) })
    }
}

/// The helper: maps up to `arenas` arenas, populated, keeping at most `AHEAD` ready.
fn fill(shared: &Shared, arenas: usize) {
    for _ in 0..arenas {
        {
            let Ok(mut ready) = shared.ready.lock() else { return };
            while ready.len() >= AHEAD && !shared.stop.load(Ordering::Relaxed) {
                ready = match shared.wanted.wait(ready) {
                    Ok(ready) => ready,
                    Err(_) => return,
                };
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: a new private anonymous mapping; MAP_POPULATE faults its pages in now.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return;
        }
        match shared.ready.lock() {
            Ok(mut ready) => ready.push_back(address as usize),
            Err(_) => {
                // SAFETY: the mapping just made, handed to no one.
                unsafe { libc::munmap(address, ARENA) };
                return;
            }
        }
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        let mut current = ArenaAllocator { ctx: std::ptr::null_mut(), alloc: None, free: None };
        // SAFETY: the GIL is held (as when started).
        unsafe { PyObject_GetArenaAllocator(&mut current) };
        if current.ctx == Arc::as_ptr(&self.shared) as *mut c_void {
            let mut interpreter = self.shared.interpreter;
            // SAFETY: the GIL is held; after this no call reaches `alloc` or `free` with our context.
            unsafe { PyObject_SetArenaAllocator(&mut interpreter) };
        } else {
            // Replaced meanwhile by code that may still call ours: its context is kept for the life of the process.
            std::mem::forget(Arc::clone(&self.shared));
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wanted.notify_all();
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
        if let Ok(mut ready) = self.shared.ready.lock() {
            for address in ready.drain(..) {
                // SAFETY: arenas mapped by the helper and never handed out.
                unsafe { libc::munmap(address as *mut c_void, ARENA) };
            }
        }
    }
}
