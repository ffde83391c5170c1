"""Building blocks shared by the models and the backbone's components, one paper component per
module: ``mlp`` (EasyRec's DNN and backbone MLP), ``din`` (DIN's target attention), ``sequence``
(BST, TextCNN), ``cross`` (DCN and DCN-v2 cross networks), ``fm`` (factorization machine
interactions), ``autoint`` (the interacting layer), ``dropout`` (variational dropout), ``transformer``
(the BERT parts of CMBF and Uniter)."""
