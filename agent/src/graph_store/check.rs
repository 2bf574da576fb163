//! Looking at a store's bytes before redb opens the file.
//!
//! redb trusts its file more than weir can: a file cut short trips an
//! assertion in its open path, and a damaged page it reads is a panic.
//! redb also writes while it opens (the repair after an unclean stop), so
//! whatever is learned by opening a damaged file would be learned on the
//! file itself. So the store is read into memory first and examined there:
//! the header by hand (what redb asserts), then redb itself on the copy,
//! with its integrity check (every page's checksum). Only a copy that
//! passes lets the real file be opened; a damaged file is never written.
//!
//! The header layout is redb's file format 3 (redb's `docs/design.md`):
//! the 9-byte magic number, the god byte and padding, then the page size,
//! the region header pages, the region's maximum data pages, the number of
//! full regions and the data pages of the trailing partial region, each a
//! little-endian `u32`; the two commit slots follow, checksummed, which
//! redb checks itself.

use std::{
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex, PoisonError},
    thread::{self, ThreadId},
};

use redb::{Builder, Database, StorageBackend as _, backends::InMemoryBackend};

/// redb's magic number.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// The header and both commit slots.
const HEADER_LEN: usize = 64 + 2 * 128;
/// The page size redb's builder uses, which it asserts the file has.
const PAGE_SIZE: u32 = 4096;

/// The file's length the header asks for, or what is wrong with the header.
pub(super) fn declared_len(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "no redb header in its first {HEADER_LEN} bytes ({} bytes long)",
            bytes.len()
        ));
    }
    let field = |offset: usize| {
        u32::from_le_bytes([
            bytes[offset],
            bytes[offset + 1],
            bytes[offset + 2],
            bytes[offset + 3],
        ])
    };
    let (page_size, header_pages, max_data_pages, full_regions, trailing_pages) =
        (field(12), field(16), field(20), field(24), field(28));
    if page_size != PAGE_SIZE
        || max_data_pages == 0
        || (full_regions == 0 && trailing_pages == 0)
        || trailing_pages >= max_data_pages
    {
        return Err(format!(
            "damaged header (page size {page_size}, region of {header_pages}+{max_data_pages} pages, \
             {full_regions} full regions, {trailing_pages} trailing pages)"
        ));
    }
    let page = u64::from(page_size);
    let region = u64::from(header_pages) + u64::from(max_data_pages);
    let trailing = if trailing_pages > 0 {
        u64::from(header_pages) + u64::from(trailing_pages)
    } else {
        0
    };
    Ok(page + (u64::from(full_regions) * region + trailing) * page)
}

/// Mark a copy as needing redb's full repair: it then checks every page
/// of the last commit against its checksum and rolls back to the previous
/// one if they do not match, instead of trusting the allocator state the
/// file says it has (god byte: bit 1 recovery required, bit 2 two-phase
/// commit).
pub(super) fn force_full_repair(bytes: &mut [u8]) {
    if let Some(god) = bytes.get_mut(MAGIC.len()) {
        *god = (*god | 0b010) & !0b100;
    }
}

/// Check the header against the length, then let redb check every page of
/// an in-memory copy. `Err` says what is wrong.
pub(super) fn examine(bytes: &[u8]) -> Result<(), String> {
    let declared = declared_len(bytes)?;
    let len = bytes.len() as u64;
    if len < declared {
        return Err(format!(
            "truncated: {len} bytes, its header says {declared}"
        ));
    }
    quietly(|| {
        let mut db = open_copy(bytes.to_vec())?;
        let before = graph(&db);
        match db.check_integrity() {
            Ok(true) => Ok(()),
            // redb also says "repaired" when it only rebuilt its own
            // bookkeeping of free pages: damage is a graph that reads
            // otherwise once every page was checked.
            Ok(false) if graph(&db) == before => Ok(()),
            Ok(false) => Err(
                "damaged pages (their checksums do not match: redb rolled back to an older save)"
                    .to_owned(),
            ),
            Err(e) => Err(format!("damaged: {e}")),
        }
    })
}

/// redb on an in-memory copy of `bytes`, repaired as redb repairs a file
/// (an unclean stop rolls back to the last commit that reads).
pub(super) fn open_copy(bytes: Vec<u8>) -> Result<Database, String> {
    let backend = InMemoryBackend::new();
    let len = bytes.len() as u64;
    backend
        .set_len(len)
        .and_then(|()| backend.write(0, &bytes))
        .map_err(|e| format!("cannot copy it into memory: {e}"))?;
    Builder::new()
        .create_with_backend(backend)
        .map_err(|e| format!("damaged: {e}"))
}

/// Run `f`, turning a panic (redb's, on a file it cannot make sense of)
/// into an error, without the panic's message on stderr: the caller
/// reports the damage itself. Only this thread's panics are silenced.
pub(super) fn quietly<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static HOOK: Mutex<()> = Mutex::new(());
    let _serial = HOOK.lock().unwrap_or_else(PoisonError::into_inner);
    let quiet: ThreadId = thread::current().id();
    let previous = Arc::new(panic::take_hook());
    let others = Arc::clone(&previous);
    panic::set_hook(Box::new(move |info| {
        if thread::current().id() != quiet {
            others(info);
        }
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    drop(panic::take_hook());
    match Arc::try_unwrap(previous) {
        Ok(hook) => panic::set_hook(hook),
        // The hook just dropped held the other reference.
        Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
    }
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unreadable".to_owned());
        Err(format!("damaged (redb could not read it: {what})"))
    })
}

/// The graph `db` holds as weir reads it, to compare.
fn graph(db: &Database) -> Option<super::Loaded> {
    match super::read_graph(db, 0, super::Rows::Lenient) {
        Ok(read) => read.map(|(loaded, _)| loaded),
        Err(_) => None,
    }
}
