//! Listings a page at a time (AIP-158 style): a page size and an opaque
//! token naming where the next page starts.

use crate::{Error, Result};

/// The most items one list call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Items per page when the caller names no size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Which page of a listing a caller asks for (AIP-158 style).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Items wanted; 0 takes the default, more than the maximum the maximum.
    pub page_size: u32,
    /// `next_page_token` of the previous page; empty for the first.
    pub page_token: String,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl PageRequest {
    pub(super) fn size(&self) -> usize {
        let size = match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        usize::try_from(size).unwrap_or(1)
    }

    /// Rows to fetch: one more than the page, to learn whether more follow.
    pub(super) fn fetch_limit(&self) -> i64 {
        i64::try_from(self.size()).unwrap_or(i64::MAX) + 1
    }

    /// The page token of a page that starts after `key`.
    pub fn token_after(key: &str) -> String {
        crate::crypto::b64url(key.as_bytes())
    }

    /// The sort key the page starts after (`""` for the first page).
    pub(super) fn after(&self) -> Result<String> {
        if self.page_token.is_empty() {
            return Ok(String::new());
        }
        crate::crypto::b64url_decode(&self.page_token)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "not a token this listing returned; start again without one",
                )
            })
    }

    /// Cuts `rows` (fetched with [`Self::fetch_limit`]) to the page and
    /// returns the token of the page after it, if any.
    pub(super) fn next_token<T>(
        &self,
        rows: &mut Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Option<String> {
        if rows.len() <= self.size() {
            return None;
        }
        rows.truncate(self.size());
        rows.last().map(|last| Self::token_after(key(last)))
    }

    /// The page of `items`, a whole listing in a stable order whose keys are
    /// unique and never reused, that starts after the item the token names.
    pub(super) fn page_of<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Page<T>> {
        let after = self.after()?;
        if !after.is_empty() {
            let at = items
                .iter()
                .position(|item| key(item) == after)
                .ok_or_else(|| {
                    Error::invalid(
                        "page_token",
                        "not a token this listing returned; start again without one",
                    )
                })?;
            items.drain(..=at);
        }
        let next_page_token = self.next_token(&mut items, key);
        Ok(Page {
            items,
            next_page_token,
        })
    }
}
