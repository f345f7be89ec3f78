//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod beit;
pub mod byobnet;
pub mod cait;
pub mod coat;
pub mod convit;
pub mod convmixer;
pub mod convnext;
pub mod cpubone;
pub mod crossvit;
pub mod csatv2;
pub mod cspnet;
pub mod cspnext;
pub mod davit;
pub mod deepseek_vit;
pub mod densenet;
pub mod dla;
pub mod dpn;
pub mod edgenext;
pub mod efficientformer;
pub mod efficientformer_v2;
pub mod efficientnet;
pub mod efficientvim;
pub mod efficientvit_mit;
pub mod efficientvit_msra;
pub mod eva;
pub mod fasternet;
pub mod fastvit;
pub mod focalnet;
pub mod gcvit;
pub mod gemma4_vit;
pub mod ghostnet;
pub mod hgnet;
pub mod hiera;
pub mod hieradet_sam2;
pub mod hrnet;
pub mod iformer;
pub mod inception_next;
pub mod inception_resnet_v2;
pub mod inception_v3;
pub mod inception_v4;
pub mod lcnetv2;
pub mod levit;
pub mod lowformer;
pub mod mambaout;
pub mod maxxvit;
pub mod metaformer;
pub mod mlp_mixer;
pub mod mobilenetv5;
pub mod mvitv2;
pub mod naflexvit;
pub mod nasnet;
pub mod nest;
pub mod nextvit;
pub mod nfnet;
pub mod pit;
pub mod pnasnet;
pub mod pvt_v2;
pub mod qwen3_vit;
pub mod rdnet;
pub mod regnet;
pub mod repghost;
pub mod repvit;
pub mod res2net;
pub mod resnest;
pub mod resnet;
pub mod resnetv2;
pub mod rexnet;
pub mod selecsls;
pub mod senet;
pub mod sequencer;
pub mod shvit;
pub mod sknet;
pub mod starnet;
pub mod swiftformer;
pub mod swin_transformer;
pub mod swin_transformer_v2;
pub mod swin_transformer_v2_cr;
pub mod tiny_vit;
pub mod tnt;
pub mod tresnet;
pub mod twins;
pub mod vgg;
pub mod visformer;
pub mod vision_transformer_hybrid;
pub mod vision_transformer_relpos;
pub mod vision_transformer_sam;
pub mod vit;
pub mod vitamin;
pub mod volo;
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
    &mobilenetv5::FAMILY,
    &efficientvim::FAMILY,
    &convnext::FAMILY,
    &cpubone::FAMILY,
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
    &efficientvit_mit::FAMILY,
    &cspnet::FAMILY,
    &cspnext::FAMILY,
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
    &repghost::FAMILY,
    &lcnetv2::FAMILY,
    &hgnet::FAMILY,
    &beit::FAMILY,
    &cait::FAMILY,
    &coat::FAMILY,
    &xcit::FAMILY,
    &pvt_v2::FAMILY,
    &twins::FAMILY,
    &tiny_vit::FAMILY,
    &edgenext::FAMILY,
    &mlp_mixer::FAMILY,
    &mvitv2::FAMILY,
    &convmixer::FAMILY,
    &mambaout::FAMILY,
    &starnet::FAMILY,
    &fasternet::FAMILY,
    &hiera::FAMILY,
    &hieradet_sam2::FAMILY,
    &iformer::FAMILY,
    &lowformer::FAMILY,
    &csatv2::FAMILY,
    &gcvit::FAMILY,
    &rdnet::FAMILY,
    &nextvit::FAMILY,
    &davit::FAMILY,
    &focalnet::FAMILY,
    &crossvit::FAMILY,
    &visformer::FAMILY,
    &convit::FAMILY,
    &volo::FAMILY,
    &nest::FAMILY,
    &pit::FAMILY,
    &vision_transformer_sam::FAMILY,
    &tnt::FAMILY,
    &vision_transformer_hybrid::FAMILY,
    &vitamin::FAMILY,
    &efficientformer::FAMILY,
    &efficientformer_v2::FAMILY,
    &swiftformer::FAMILY,
    &shvit::FAMILY,
    &sequencer::FAMILY,
    &naflexvit::FAMILY,
    &qwen3_vit::FAMILY,
    &deepseek_vit::FAMILY,
    &gemma4_vit::FAMILY,
    &nasnet::FAMILY,
    &pnasnet::FAMILY,
];
