//! Importing a local file as a complete object.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::{check_chunk_size, unix_now, Store, INDEX_FILE};
use crate::data::DataFile;
use crate::digest::{Algo, Digest, PrefixHasher};
use crate::error::{Error, Result};
use crate::index::{IndexHeader, IndexState, IndexWriter, Record};
use crate::layout::*;
use crate::object::Object;

impl Store {
    /// Copies the file at `path` into the store as a complete object and
    /// returns it (its BLAKE3 is [`Object::blake3`]). The file is read once:
    /// chunk chaining values are computed as it is copied, and the root is
    /// merged from them. Blocking: call from a blocking thread in async code.
    pub fn import(&self, path: &Path, chunk_size: u32) -> Result<Object> {
        check_chunk_size(u64::from(chunk_size))?;
        let mut file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let header = IndexHeader {
            len,
            chunk_size,
            data_id: rand::random(),
            source: format!("import:{}", abs.display()),
            validator: String::new(),
            expected: None,
            created_unix: unix_now(),
        };
        let s = &self.shared;
        let tmp = s
            .dir
            .join(TMP)
            .join(format!("import-{}", hex_id(&rand::random::<[u8; 8]>())));
        create_dir(&tmp)?;
        let result = (|| {
            let index_path = tmp.join(INDEX_FILE);
            let mut writer = IndexWriter::create(&index_path, &header)?;
            // Held while copying so a concurrent store open leaves it be.
            let lock = File::open(&index_path).map_err(|e| Error::io(&index_path, "open", e))?;
            lock.try_lock()
                .map_err(|e| Error::io(&index_path, "lock", std::io::Error::other(e)))?;
            let data_path = tmp.join(header.data_file_name());
            DataFile::create(&data_path, len)?;
            let data = DataFile::open(&data_path, len, None)?;
            let mut buf = vec![0u8; chunk_size as usize];
            let mut cvs = Vec::with_capacity(header.chunk_count() as usize);
            let mut records = Vec::with_capacity(cvs.capacity() + 1);
            let mut state = IndexState::default();
            let mut sha = PrefixHasher::new(&[Algo::Sha256]);
            for c in 0..header.chunk_count() {
                let r = header.chunk_range(c);
                let n = (r.end - r.start) as usize;
                file.read_exact(&mut buf[..n])
                    .map_err(|e| Error::io(path, "read", e))?;
                let cv = crate::hash::chunk_cv(&buf[..n], c, chunk_size, len);
                sha.update(&buf[..n]);
                data.write_at(r.start, &buf[..n])?;
                cvs.push(cv);
                records.push(Record::Chunk { index: c, cv });
                state.done.insert(c);
            }
            let root = crate::hash::root_from_cvs(&cvs, chunk_size, len);
            records.push(Record::Root {
                hash: *root.as_bytes(),
            });
            state.root = Some(*root.as_bytes());
            data.sync()?;
            let digests = sha.finish();
            s.store_digests(&tmp, &header, &digests)?;
            writer.append(&records)?;
            writer.snapshot(&state)?;
            sync_dir(&tmp)?;
            Ok::<_, Error>((root, digests))
        })();
        let (root, digests) = match result {
            Ok(root) => root,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let key = object_key(&format!("blake3:{}", root.to_hex()), "", len);
        let dest = s.dir.join(OBJECTS).join(&key);
        if dest.join(INDEX_FILE).exists() {
            // The same bytes were imported before.
            let _ = fs::remove_dir_all(&tmp);
        } else {
            fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, "register object", e))?;
            sync_dir(&s.dir.join(OBJECTS))?;
            s.share_data(&key, &header, &root);
        }
        for d in std::iter::once(Digest::blake3(&root)).chain(digests) {
            s.name_object(&d, &key)?;
        }
        self.open_ref(&key)
    }
}
