//! Listings: every `List…` request names its page the same way and every
//! response carries a page of items and the next page's token, so one
//! handler serves them all ([`Api::list`]).

use std::future::Future;

use tonic::Request;

use super::{Api, Reply, pb};
use crate::{
    Error,
    domain::access::Method,
    service::{Page, PageRequest, Target},
};

/// A `List…` request: the page it asks for.
pub(super) trait PagedRequest {
    /// Its page size and token (taken out of the request).
    fn page(&mut self) -> PageRequest;
}

/// A `List…` response: a page of wire items and the next page's token
/// (empty after the last page).
pub(super) trait PagedResponse {
    /// What it lists.
    type Item;
    /// The response holding `items`.
    fn of(items: Vec<Self::Item>, next_page_token: String) -> Self;
}

macro_rules! paged {
    ($($request:ident => $response:ident { $items:ident: $item:ident }),+ $(,)?) => {
        $(
            impl PagedRequest for pb::$request {
                fn page(&mut self) -> PageRequest {
                    PageRequest {
                        page_size: self.page_size,
                        page_token: std::mem::take(&mut self.page_token),
                    }
                }
            }

            impl PagedResponse for pb::$response {
                type Item = pb::$item;

                fn of($items: Vec<pb::$item>, next_page_token: String) -> Self {
                    Self {
                        $items,
                        next_page_token,
                    }
                }
            }
        )+
    };
}

paged! {
    ListKeySetsRequest => ListKeySetsResponse { key_sets: KeySet },
    ListKeysRequest => ListKeysResponse { keys: Key },
    ListClientsRequest => ListClientsResponse { clients: Client },
    ListTokensRequest => ListTokensResponse { tokens: Token },
}

/// The audit listing's page: `limit` and `before_id` are its older
/// spellings of the page size and token.
impl PagedRequest for pb::ListAuditEventsRequest {
    fn page(&mut self) -> PageRequest {
        PageRequest {
            page_size: if self.page_size == 0 {
                self.limit
            } else {
                self.page_size
            },
            page_token: if self.page_token.is_empty() && self.before_id > 0 {
                PageRequest::token_after(&self.before_id.to_string())
            } else {
                std::mem::take(&mut self.page_token)
            },
        }
    }
}

impl PagedResponse for pb::ListAuditEventsResponse {
    type Item = pb::AuditEvent;

    fn of(events: Vec<pb::AuditEvent>, next_page_token: String) -> Self {
        Self {
            events,
            next_page_token,
        }
    }
}

impl Api {
    /// One page of a listing, as [`Api::call`] runs any call: `list` reads
    /// the page the request asks for (the request, less its page, is handed
    /// over too), `to_pb` converts each item.
    pub(super) async fn list<Q, S, T, F, Fut>(
        &self,
        req: Request<Q>,
        method: Method,
        target: impl FnOnce(&Q) -> Target,
        list: F,
        to_pb: impl FnMut(T) -> S::Item,
    ) -> Reply<S>
    where
        Q: PagedRequest,
        S: PagedResponse,
        F: FnOnce(Q, PageRequest) -> Fut,
        Fut: Future<Output = Result<Page<T>, Error>>,
    {
        self.call(req, method, target, |mut r| async move {
            let page = r.page();
            let page = list(r, page).await?;
            let next_page_token = page.next_page_token.unwrap_or_default();
            Ok(S::of(
                page.items.into_iter().map(to_pb).collect(),
                next_page_token,
            ))
        })
        .await
    }
}
