//! The gRPC connection to the ingress, with the API key sent as `x-api-key`
//! metadata on every call. The key is held as a [`Secret`] and never printed.

use loket_protocol::pb::loket_client::LoketClient;
use loket_runtime::Secret;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::CliError;

pub const API_KEY_HEADER: &str = "x-api-key";

/// Adds the API key to every request.
#[derive(Clone)]
pub struct ApiKeyInterceptor {
    key: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl ApiKeyInterceptor {
    /// Refuses a key that cannot travel as gRPC metadata, without repeating it.
    pub fn new(key: Option<&Secret>) -> Result<Self, CliError> {
        let key = match key {
            None => None,
            Some(key) if key.is_empty() => None,
            Some(key) => {
                let mut value: MetadataValue<tonic::metadata::Ascii> =
                    key.expose().parse().map_err(|_| {
                        CliError::Usage(
                            "--api-key: not a valid API key (must be printable ASCII)".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(ApiKeyInterceptor { key })
    }
}

impl std::fmt::Debug for ApiKeyInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyInterceptor")
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl tonic::service::Interceptor for ApiKeyInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.key {
            request.metadata_mut().insert(API_KEY_HEADER, key.clone());
        }
        Ok(request)
    }
}

pub type Client = LoketClient<InterceptedService<Channel, ApiKeyInterceptor>>;

/// Connects one HTTP/2 channel to `addr`.
pub async fn connect_channel(addr: &str) -> Result<Channel, CliError> {
    let connect_error = |reason: String| CliError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|_| {
            CliError::Usage(format!(
                "--addr {addr:?}: not a valid URL (e.g. http://127.0.0.1:50051)"
            ))
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint
        .connect()
        .await
        .map_err(|error| connect_error(error_chain(&error)))
}

/// A client on an existing channel.
pub fn client(channel: Channel, key: Option<&Secret>) -> Result<Client, CliError> {
    Ok(LoketClient::with_interceptor(
        channel,
        ApiKeyInterceptor::new(key)?,
    ))
}

/// Connects and builds a client.
pub async fn connect(addr: &str, key: Option<&Secret>) -> Result<Client, CliError> {
    let interceptor = ApiKeyInterceptor::new(key)?;
    let channel = connect_channel(addr).await?;
    Ok(LoketClient::with_interceptor(channel, interceptor))
}

/// The API key a command that calls the ingress sends: given and not
/// blank, or bad usage said here, before connecting, rather than the
/// server's `UNAUTHENTICATED` after it.
pub fn api_key(key: Option<&Secret>) -> Result<&Secret, CliError> {
    crate::setting::required(key, "no API key", "LOKET_API_KEY", "--api-key")
}

/// "transport error: tcp connect error: Connection refused" rather than
/// only the outermost text. A cause whose text is already there (hyper's
/// connect error repeats its own text as its source's) is left out.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let cause = inner.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    #[test]
    fn interceptor_adds_the_key() {
        let secret = Secret::new("lk_abc");
        let mut interceptor = ApiKeyInterceptor::new(Some(&secret)).expect("valid");
        let request = interceptor.call(tonic::Request::new(())).expect("ok");
        assert_eq!(
            request.metadata().get(API_KEY_HEADER).expect("set"),
            "lk_abc"
        );
        assert!(!format!("{interceptor:?}").contains("lk_abc"));
    }

    /// An error whose cause may say the same as it does.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|inner| inner as _)
        }
    }

    #[test]
    fn each_distinct_cause_is_shown_once() {
        let error = Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error",
                Some(Box::new(Layer(
                    "tcp connect error",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_missing_or_empty_key_is_named_before_connecting() {
        for key in [None, Some(Secret::new(""))] {
            let error = api_key(key.as_ref()).expect_err("no key");
            assert_eq!(
                error.to_string(),
                "no API key: set LOKET_API_KEY (or --api-key)"
            );
            assert_eq!(error.exit_code(), 2);
        }
        let key = Secret::new("lk_abc");
        assert_eq!(api_key(Some(&key)).expect("given").expose(), "lk_abc");
    }

    #[test]
    fn no_key_no_header_and_bad_key_is_not_echoed() {
        let mut interceptor = ApiKeyInterceptor::new(None).expect("valid");
        let request = interceptor.call(tonic::Request::new(())).expect("ok");
        assert!(request.metadata().get(API_KEY_HEADER).is_none());
        let bad = Secret::new("lk_\nsecret");
        let error = ApiKeyInterceptor::new(Some(&bad)).expect_err("refused");
        assert!(!error.to_string().contains("secret"));
    }
}
