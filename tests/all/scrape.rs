//! Scrapes a Prometheus endpoint with an HTTP client (hyper) and parses
//! the text format's samples. Shared by the integration tests and the
//! worker's process tests.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// `GET path` on `addr`: the status, content type and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics endpoint accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("UTF-8 text"),
    )
}

/// Scrapes `/metrics` and parses every sample: `name{labels}` to its value.
pub(crate) async fn scrape(addr: SocketAddr) -> Samples {
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "not OpenMetrics text:\n{body}");
    Samples::parse(&body)
}

/// The samples of one scrape.
#[derive(Debug)]
pub(crate) struct Samples {
    values: HashMap<String, f64>,
    pub(crate) text: String,
}

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut values = HashMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                value => value
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number: {line:?}")),
            };
            assert!(
                values.insert(key.to_owned(), value).is_none(),
                "sample {key} twice"
            );
        }
        Samples {
            values,
            text: text.to_owned(),
        }
    }

    /// The sample of `name` whose labels include every one of `labels`
    /// (there must be exactly one), or `None`.
    pub(crate) fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .values
            .iter()
            .filter(|(key, _)| {
                let (sample, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
                sample == name
                    && labels
                        .iter()
                        .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
            })
            .map(|(_, value)| *value)
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} samples",
            matching.len()
        );
        matching.first().copied()
    }

    /// As [`find`](Samples::find), failing with the scrape when absent.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }
}
