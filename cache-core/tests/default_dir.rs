//! `Store::default_dir`: the environment variables it follows, in order.
//! One test in its own binary: it changes the process environment.

use std::path::PathBuf;

use cache_core::Store;

#[test]
fn default_dir_follows_blockcache_store_then_xdg_then_home() {
    for v in ["BLOCKCACHE_STORE", "XDG_CACHE_HOME", "HOME"] {
        std::env::remove_var(v);
    }
    assert_eq!(Store::default_dir(), None, "nothing set: no guess");

    std::env::set_var("HOME", "/home/u");
    assert_eq!(
        Store::default_dir(),
        Some(PathBuf::from("/home/u/.cache/blockcache"))
    );

    std::env::set_var("XDG_CACHE_HOME", "");
    assert_eq!(
        Store::default_dir(),
        Some(PathBuf::from("/home/u/.cache/blockcache")),
        "an empty variable counts as unset"
    );
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    assert_eq!(Store::default_dir(), Some(PathBuf::from("/xdg/blockcache")));

    std::env::set_var("BLOCKCACHE_STORE", "/srv/bc");
    assert_eq!(Store::default_dir(), Some(PathBuf::from("/srv/bc")));
}
