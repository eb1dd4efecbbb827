//! The protobuf codec of every `keyward.v1` message: prost's, except that a
//! request that does not decode (undecodable bytes, a string that is not
//! UTF-8) is the caller's bad input, `INVALID_ARGUMENT`, not keyward's
//! failure (prost's codec says `INTERNAL`).

use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder, prost::Message};

/// The codec the generated services and clients use.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(self.0.decoder())
    }
}

/// prost's decoder, its decode errors answered as bad input.
#[derive(Debug)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "the message does not decode as keyward.v1 protobuf: {}",
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
