//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod beit;
pub mod byobnet;
pub mod cait;
pub mod convmixer;
pub mod convnext;
pub mod cspnet;
pub mod densenet;
pub mod dla;
pub mod dpn;
pub mod edgenext;
pub mod efficientnet;
pub mod efficientvit_msra;
pub mod eva;
pub mod fasternet;
pub mod fastvit;
pub mod gcvit;
pub mod ghostnet;
pub mod hgnet;
pub mod hiera;
pub mod hrnet;
pub mod inception_next;
pub mod inception_resnet_v2;
pub mod inception_v3;
pub mod inception_v4;
pub mod levit;
pub mod mambaout;
pub mod maxxvit;
pub mod metaformer;
pub mod mlp_mixer;
pub mod nasnet;
pub mod nextvit;
pub mod nfnet;
pub mod pnasnet;
pub mod pvt_v2;
pub mod rdnet;
pub mod regnet;
pub mod repvit;
pub mod res2net;
pub mod resnest;
pub mod resnet;
pub mod resnetv2;
pub mod rexnet;
pub mod selecsls;
pub mod senet;
pub mod sequencer;
pub mod sknet;
pub mod starnet;
pub mod swin_transformer;
pub mod swin_transformer_v2;
pub mod swin_transformer_v2_cr;
pub mod tiny_vit;
pub mod tresnet;
pub mod twins;
pub mod vgg;
pub mod vision_transformer_relpos;
pub mod vit;
pub mod vovnet;
pub mod xception;
pub mod xception_aligned;
pub mod xcit;

use super::Family;

/// Every family this build knows, in matching order.
pub static ALL: &[&Family] = &[
    &resnet::FAMILY,
    &resnetv2::FAMILY,
    &efficientnet::FAMILY,
    &convnext::FAMILY,
    &regnet::FAMILY,
    &vit::FAMILY,
    &swin_transformer::FAMILY,
    &swin_transformer_v2::FAMILY,
    &swin_transformer_v2_cr::FAMILY,
    &eva::FAMILY,
    &densenet::FAMILY,
    &vgg::FAMILY,
    &inception_v3::FAMILY,
    &inception_v4::FAMILY,
    &inception_resnet_v2::FAMILY,
    &maxxvit::FAMILY,
    &vision_transformer_relpos::FAMILY,
    &byobnet::FAMILY,
    &metaformer::FAMILY,
    &inception_next::FAMILY,
    &xception::FAMILY,
    &xception_aligned::FAMILY,
    &levit::FAMILY,
    &efficientvit_msra::FAMILY,
    &cspnet::FAMILY,
    &fastvit::FAMILY,
    &sknet::FAMILY,
    &senet::FAMILY,
    &res2net::FAMILY,
    &resnest::FAMILY,
    &nfnet::FAMILY,
    &dla::FAMILY,
    &dpn::FAMILY,
    &vovnet::FAMILY,
    &selecsls::FAMILY,
    &hrnet::FAMILY,
    &tresnet::FAMILY,
    &ghostnet::FAMILY,
    &rexnet::FAMILY,
    &repvit::FAMILY,
    &hgnet::FAMILY,
    &beit::FAMILY,
    &cait::FAMILY,
    &xcit::FAMILY,
    &pvt_v2::FAMILY,
    &twins::FAMILY,
    &tiny_vit::FAMILY,
    &edgenext::FAMILY,
    &mlp_mixer::FAMILY,
    &convmixer::FAMILY,
    &mambaout::FAMILY,
    &starnet::FAMILY,
    &fasternet::FAMILY,
    &hiera::FAMILY,
    &gcvit::FAMILY,
    &rdnet::FAMILY,
    &nextvit::FAMILY,
    &sequencer::FAMILY,
    &nasnet::FAMILY,
    &pnasnet::FAMILY,
];
